//! jobmesh: a peer-to-peer job mesh over WebRTC data channels.

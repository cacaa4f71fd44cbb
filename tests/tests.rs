//! jobmesh's integration tests: real signal-server, real daemons, real WebRTC
//! data channels over loopback. One module per behaviour, named as a sentence.

mod cli_submit_prints_envelopes_and_exit_codes;
mod departed_peers_leave_the_pool;
mod echo_job_returns_its_input_over_a_data_channel;
mod jobs_finish_after_the_signal_server_is_gone;
mod jobs_go_only_to_capable_workers;
mod jobs_spread_over_both_workers;
mod malformed_data_channel_message_gets_an_error_reply;
mod malformed_signalling_input_gets_an_error_and_a_close;
mod signal_server_never_carries_a_payload;
mod signal_server_serves_http_and_shuts_down_cleanly;
mod simultaneous_dials_resolve_to_one_link;

//! jobmesh's integration tests: real signal-server, real daemons, real WebRTC
//! data channels over loopback. One module per behaviour, named as a sentence.

mod a_control_client_that_leaves_cancels_its_job;
mod a_draining_worker_finishes_its_jobs_and_refuses_new_ones;
mod cli_lifecycle_acceptance;
mod cli_submit_prints_envelopes_and_exit_codes;
mod departed_peers_leave_the_pool;
mod echo_job_returns_its_input_over_a_data_channel;
mod exec_handlers_run_commands;
mod job_lifecycle_over_webrtc;
mod jobs_finish_after_the_signal_server_is_gone;
mod jobs_go_only_to_capable_workers;
mod jobs_spread_over_both_workers;
mod malformed_data_channel_message_gets_an_error_reply;
mod peers_rejoin_when_the_signal_server_returns;
mod signal_server_never_carries_a_payload;
mod simultaneous_dials_resolve_to_one_link;
mod the_library_example_runs;

#![no_main]
//! See guardrail_agent::fuzzing::replay_line for the property checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| guardrail_agent::fuzzing::replay_line(data));

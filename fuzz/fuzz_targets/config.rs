#![no_main]
//! See guardrail_agent::fuzzing::config for the property checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| guardrail_agent::fuzzing::config(data));

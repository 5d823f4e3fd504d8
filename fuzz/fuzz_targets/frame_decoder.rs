//! Arbitrary bytes through the segment-header and frame decoders; the contract checked
//! is `sluice_wal::format::check_decoder_contract` (also run as a property test).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_wal::format::check_decoder_contract(data);
});

//! Fuzz target: the write-ahead log's frame and record decoders must never panic, never read
//! out of bounds and never allocate beyond their input, whatever the bytes (a damaged or
//! hostile segment file). Also checks that whatever decodes re-encodes to a frame that decodes
//! to the same record.
//!
//! Run (needs nightly and cargo-fuzz; not run in CI):
//!
//! ```text
//! cargo install cargo-fuzz
//! cd crates/storage/fuzz
//! cargo +nightly fuzz run decode_record
//! ```
//!
//! A good starting corpus is a few real segment files cut into pieces.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tenure_storage::record::{self, Record};

fuzz_target!(|data: &[u8]| {
    // Walk the bytes as a segment would be walked by recovery.
    let mut rest = data;
    while let Ok(frame) = record::decode_frame(rest) {
        assert!(frame.frame_bytes <= rest.len());
        if let Ok(Record::Entry { id, kind, data: payload }) = record::decode_record(frame.body) {
            let mut again = Vec::new();
            record::encode_entry(&mut again, id, kind, payload);
            let reframed = record::decode_frame(&again).expect("re-encoded frame decodes");
            assert_eq!(
                record::decode_record(reframed.body),
                Ok(Record::Entry { id, kind, data: payload })
            );
        }
        rest = &rest[frame.frame_bytes..];
    }
    // And as a bare body.
    let _ = record::decode_record(data);
});

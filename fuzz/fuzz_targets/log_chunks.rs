//! Log chunks as the server reads them from a worker (`POST /worker/jobs/{id}/logs` and
//! `POST /worker/logs`): JSON with base64 `data`. Whatever parses must re-encode to the
//! same chunks (seq, stream and bytes exact). Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rota_api_types::worker::{LogsBatchRequest, LogsRequest};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<LogsRequest>(data) {
        let Ok(again) = serde_json::to_vec(&req) else { panic!("a parsed request must encode") };
        let back: LogsRequest = match serde_json::from_slice(&again) {
            Ok(back) => back,
            Err(e) => panic!("re-encoded request does not parse: {e}"),
        };
        assert_eq!(back.chunks, req.chunks);
    }
    if let Ok(req) = serde_json::from_slice::<LogsBatchRequest>(data) {
        let Ok(again) = serde_json::to_vec(&req) else { panic!("a parsed batch must encode") };
        let back: LogsBatchRequest = match serde_json::from_slice(&again) {
            Ok(back) => back,
            Err(e) => panic!("re-encoded batch does not parse: {e}"),
        };
        for (a, b) in back.batches.iter().zip(&req.batches) {
            assert_eq!(a.chunks, b.chunks);
        }
    }
});

//! `rota apply -f` / the MCP `apply_resources` tool: a file of resource documents split at
//! `---`, each parsed by kind, checked, and its errors placed. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rota_manifest::{manifests, source_map};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(found) = manifests::from_text("fuzz.yaml", text) {
        for m in &found {
            let _ = m.label();
            let _ = m.position("/spec/steps/0/run");
        }
    }
    // The server's JSON pointers come back from the network: any pointer into any text.
    if let Some((pointer, doc)) = text.split_once('\n') {
        let _ = source_map::locate_pointer(doc, pointer);
        let _ = source_map::locate(doc, pointer);
    }
});

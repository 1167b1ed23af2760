//! Fuzz the message decoder: any input must decode or fail with a NOTIFICATION, never panic;
//! a message decoded without errors must re-encode and decode to the same value.
#![no_main]

use calyx_proto::{decode_message, Message, ParseContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first octet picks the session context, the rest is the message.
    let Some((&sel, msg)) = data.split_first() else { return };
    let ctx = ParseContext {
        four_octet_as: sel & 1 != 0,
        extended_message: sel & 2 != 0,
        add_path_ipv4: sel & 4 != 0,
        add_path_ipv6: sel & 8 != 0,
        external_peer: sel & 16 != 0,
    };
    let Ok(m) = decode_message(msg, &ctx) else { return };
    if let Message::Update(u) = &m {
        if !u.errors.is_empty() {
            return;
        }
    }
    let bytes = m.to_bytes(&ctx).expect("a decoded message re-encodes");
    let again = decode_message(&bytes, &ctx).expect("a re-encoded message decodes");
    assert_eq!(m, again);
});

//! Which body processor a request's `Content-Type` selects: shared by the transaction and by
//! the gateway, which reads only the bodies the built-in rules can parse.

/// The body processor a `Content-Type` selects before any rule runs, as ModSecurity's
/// recommended configuration and CRS do: `URLENCODED`, `MULTIPART`, `XML` or `JSON`; `None` for
/// a type the engine has no reader for (a rule may still choose one with a `ctl`).
pub fn body_processor(content_type: Option<&[u8]>) -> Option<&'static str> {
    let value = String::from_utf8_lossy(content_type?).to_ascii_lowercase();
    if value.starts_with("application/x-www-form-urlencoded") {
        Some("URLENCODED")
    } else if value.starts_with("multipart/form-data") {
        Some("MULTIPART")
    } else if value.contains("xml") {
        Some("XML")
    } else if value.contains("json") {
        Some("JSON")
    } else {
        None
    }
}

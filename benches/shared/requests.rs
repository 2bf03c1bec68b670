//! Requests the benchmarks share (included with `#[path]`; not a benchmark of its own).

/// The headers of a browser-like request: 8 lines, a bearer token and 3 cookies.
pub fn browser_headers() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("Host", b"api.example.com"),
        (
            "User-Agent",
            b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        ("Accept", b"application/json"),
        ("Accept-Language", b"en-GB,en;q=0.8"),
        ("Accept-Encoding", b"gzip, deflate, br"),
        (
            "Authorization",
            b"Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
        ),
        ("X-Request-Id", b"6f1c1a52-7d4b-4e0a-9a7c-3c1e0b7f9d21"),
        ("Cookie", b"session=8b2f0c7e4a; theme=dark; lang=en-GB"),
    ]
}

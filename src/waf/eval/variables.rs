//! The variables of a request: its collections filled from the request line and headers, read
//! member by member for a target, counted, and expanded in macros (`%{tx.score}`).

use super::body::parse_query;
use super::phases::selects;
use super::*;

impl Macros for Transaction<'_> {
    fn value(&self, collection: &str, key: &str) -> Option<Cow<'_, [u8]>> {
        match collection {
            "TX" if key.bytes().any(|b| b.is_ascii_uppercase()) => {
                self.s.tx.get(&key.to_ascii_lowercase()).map(Cow::Borrowed)
            }
            "TX" => self.s.tx.get(key).map(Cow::Borrowed),
            "MATCHED_VAR" => Some(Cow::Borrowed(self.matched_var().1)),
            "MATCHED_VAR_NAME" => Some(Cow::Borrowed(self.matched_var().0.as_bytes())),
            "RULE" if key == "id" => Some(Cow::Owned(self.rule_id.to_string().into_bytes())),
            "RULE" => None,
            other => {
                let c = Collection::from_name(other)?;
                let values = self.s.collections.get(c as usize)?;
                let found = if key.is_empty() {
                    values.as_slice().first()
                } else {
                    values
                        .as_slice()
                        .iter()
                        .find(|(name, _)| name.eq_ignore_ascii_case(key))
                };
                found.map(|(_, v)| Cow::Borrowed(v.as_slice()))
            }
        }
    }
}

impl Transaction<'_> {
    /// Collection `c` emptied and refilled by `fill` (its entries keep their buffers from
    /// request to request); what was known of its values is forgotten.
    /// A collection no rule reads stays empty (`RuleSet::reads`).
    pub(super) fn fill(&mut self, c: Collection, fill: impl FnOnce(&mut Pairs)) {
        if !self.rules.reads.has(c) {
            return;
        }
        self.forget_screening(c);
        if let Some(slot) = self.s.collections.get_mut(c as usize) {
            slot.clear();
            fill(slot);
        }
        self.describe(c);
    }

    pub(super) fn set(&mut self, c: Collection, values: &[(String, Vec<u8>)]) {
        self.fill(c, |p| values.iter().for_each(|(n, v)| p.push(n, v)));
    }

    pub(super) fn one(&mut self, c: Collection, name: &str, value: impl AsRef<[u8]>) {
        self.fill(c, |p| p.push(name, value.as_ref()));
    }

    /// Collection `to` refilled with the members of `from` (or, for `names`, with their
    /// names as values, as ARGS_NAMES holds them).
    pub(super) fn copy(&mut self, from: Collection, to: Collection, names: bool) {
        let Some(source) = self
            .s
            .collections
            .get_mut(from as usize)
            .map(std::mem::take)
        else {
            return;
        };
        self.fill(to, |p| {
            for (n, v) in source.as_slice() {
                p.push(n, if names { n.as_bytes() } else { v });
            }
        });
        if let Some(slot) = self.s.collections.get_mut(from as usize) {
            *slot = source;
        }
    }

    pub(super) fn read_head(&mut self, r: &Request) {
        use Collection::*;
        let uri = r.uri.split('#').next().unwrap_or("");
        let (path, query) = match uri.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (uri, None),
        };
        // ModSecurity's REQUEST_FILENAME is the path with %XX decoded (`+` kept).
        let filename = crate::waf::transform::decode::url_decode(path.as_bytes(), false, false);
        let basename = filename
            .iter()
            .rposition(|b| *b == b'/' || *b == b'\\')
            .map_or(&filename[..], |i| &filename[i + 1..]);
        self.one(RequestBasename, "REQUEST_BASENAME", basename);
        self.one(RequestMethod, "REQUEST_METHOD", r.method);
        self.one(RequestProtocol, "REQUEST_PROTOCOL", r.protocol);
        if self.rules.reads.has(RequestLine) {
            let line = format!("{} {} {}", r.method, r.uri, r.protocol);
            self.one(RequestLine, "REQUEST_LINE", line);
        }
        self.one(RequestUri, "REQUEST_URI", uri);
        self.one(RequestUriRaw, "REQUEST_URI_RAW", r.uri);
        self.fill(RequestPathSegments, |p| {
            let segments = filename.split(|b| *b == b'/' || *b == b'\\');
            for (i, segment) in segments.filter(|s| !s.is_empty()).enumerate() {
                p.push(&(i + 1).to_string(), segment);
            }
        });
        self.one(RequestFilename, "REQUEST_FILENAME", filename);
        self.one(QueryString, "QUERY_STRING", query.unwrap_or(""));
        self.one(RemoteAddr, "REMOTE_ADDR", r.remote_addr);
        self.one(UniqueId, "UNIQUE_ID", r.unique_id);
        self.one(Duration, "DURATION", "0");
        self.fill(ArgsGet, |p| {
            if let Some(q) = query {
                parse_query(q.as_bytes(), p)
            }
        });
        self.copy(ArgsGet, ArgsGetNames, true);
        self.copy(ArgsGet, Args, false);
        self.fill(RequestHeaders, |p| {
            r.headers.iter().for_each(|(n, v)| p.push(n, v));
        });
        self.fill(RequestCookies, |cookies| {
            for (_, value) in r
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            {
                for part in value.split(|b| *b == b';') {
                    let part = &part[part.iter().position(|b| *b != b' ').unwrap_or(part.len())..];
                    if part.is_empty() {
                        continue;
                    }
                    let (k, v) = match part.iter().position(|b| *b == b'=') {
                        Some(i) => (&part[..i], &part[i + 1..]),
                        None => (part, &b""[..]),
                    };
                    cookies.push(&String::from_utf8_lossy(k), v);
                }
            }
        });
        // As in ModSecurity, the body processor is known from the headers, before phase 1:
        // rules may read REQBODY_PROCESSOR there and change it with a ctl.
        let content_type = r
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| *v);
        self.body_processor = super::processor::body_processor(content_type).map(str::to_string);
        self.one(
            ReqbodyProcessor,
            "REQBODY_PROCESSOR",
            self.body_processor.clone().unwrap_or_default(),
        );
        self.copy(RequestHeaders, RequestHeadersNames, true);
        self.copy(RequestCookies, RequestCookiesNames, true);
        self.refresh_sizes();
    }

    pub(super) fn refresh_sizes(&mut self) {
        let args = self
            .s
            .collections
            .get(Collection::Args as usize)
            .map_or(&[][..], Pairs::as_slice);
        if self.rules.reads.has(Collection::ArgsCombinedSize) {
            let size: usize = args.iter().map(|(k, v)| k.len() + v.len()).sum();
            self.one(
                Collection::ArgsCombinedSize,
                "ARGS_COMBINED_SIZE",
                size.to_string(),
            );
        }
        self.copy(Collection::Args, Collection::ArgsNames, true);
    }

    /// MATCHED_VAR's name and value (empty before a match).
    pub(super) fn matched_var(&self) -> (&str, &[u8]) {
        self.s
            .matched_var
            .last()
            .map_or(("", &[][..]), |(n, v)| (n.as_str(), v.as_slice()))
    }

    /// Each selected member of a target's collection, borrowed, with its cache key (the
    /// collection and the member's index; the chain id is added by the caller) when its
    /// value stays the same for the whole request.
    pub(super) fn for_each_member(&self, target: &Target, f: &mut MemberVisitor) {
        let selected = |name: &str| target.selector.as_ref().is_none_or(|s| selects(s, name));
        match target.collection {
            Collection::Tx => match &target.selector {
                // TX names are kept in lower case, as selectors are compiled.
                Some(TargetSelector::Key(k)) => {
                    let found = match target.tx_number {
                        Some(i) => self.s.tx.numbered_key_value(i),
                        None => self.s.tx.get_key_value(k.as_str()),
                    };
                    if let Some((name, v)) = found {
                        f(None, name, v);
                    }
                }
                _ => {
                    for (k, v) in self.s.tx.iter().filter(|(k, _)| selected(k)) {
                        f(None, k, v);
                    }
                }
            },
            Collection::MatchedVar | Collection::MatchedVarName => {
                let (name, value) = self.matched_var();
                match target.collection {
                    _ if name.is_empty() => {}
                    Collection::MatchedVar => f(None, name, value),
                    _ => f(None, "", name.as_bytes()),
                }
            }
            Collection::MatchedVars => {
                for (n, v) in self
                    .s
                    .matched_vars
                    .as_slice()
                    .iter()
                    .filter(|(n, _)| selected(n))
                {
                    f(None, n, v);
                }
            }
            Collection::MatchedVarsNames => {
                for (n, _) in self
                    .s
                    .matched_vars
                    .as_slice()
                    .iter()
                    .filter(|(n, _)| selected(n))
                {
                    f(None, n, n.as_bytes());
                }
            }
            c => {
                let Some(values) = self.s.collections.get(c as usize) else {
                    return;
                };
                for (i, (n, v)) in values.as_slice().iter().enumerate() {
                    if selected(n) {
                        f(Some(member_key(c, i)), n, v);
                    }
                }
            }
        }
    }
}

pub(super) fn collection_name(t: &Target) -> &'static str {
    use Collection::*;
    match t.collection {
        Args => "ARGS",
        ArgsNames => "ARGS_NAMES",
        ArgsGet => "ARGS_GET",
        ArgsGetNames => "ARGS_GET_NAMES",
        ArgsPost => "ARGS_POST",
        ArgsPostNames => "ARGS_POST_NAMES",
        ArgsCombinedSize => "ARGS_COMBINED_SIZE",
        Duration => "DURATION",
        Files => "FILES",
        FilesNames => "FILES_NAMES",
        FilesSizes => "FILES_SIZES",
        FilesCombinedSize => "FILES_COMBINED_SIZE",
        MatchedVar => "MATCHED_VAR",
        MatchedVarName => "MATCHED_VAR_NAME",
        MatchedVars => "MATCHED_VARS",
        MatchedVarsNames => "MATCHED_VARS_NAMES",
        MultipartPartHeaders => "MULTIPART_PART_HEADERS",
        QueryString => "QUERY_STRING",
        RemoteAddr => "REMOTE_ADDR",
        ReqbodyError => "REQBODY_ERROR",
        ReqbodyErrorMsg => "REQBODY_ERROR_MSG",
        ReqbodyProcessor => "REQBODY_PROCESSOR",
        RequestBasename => "REQUEST_BASENAME",
        RequestBody => "REQUEST_BODY",
        RequestBodyLength => "REQUEST_BODY_LENGTH",
        RequestCookies => "REQUEST_COOKIES",
        RequestCookiesNames => "REQUEST_COOKIES_NAMES",
        RequestFilename => "REQUEST_FILENAME",
        RequestHeaders => "REQUEST_HEADERS",
        RequestHeadersNames => "REQUEST_HEADERS_NAMES",
        RequestLine => "REQUEST_LINE",
        RequestMethod => "REQUEST_METHOD",
        RequestPathSegments => "REQUEST_PATH_SEGMENTS",
        RequestProtocol => "REQUEST_PROTOCOL",
        RequestUri => "REQUEST_URI",
        RequestUriRaw => "REQUEST_URI_RAW",
        Tx => "TX",
        UniqueId => "UNIQUE_ID",
        Xml => "XML",
        Unkept => "IP",
    }
}

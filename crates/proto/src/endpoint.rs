//! Server addresses: `ws://HOST:PORT`, `wss://…`, `http://…` or `https://…`
//! all name one server; these derive its signaling and admin URLs.

/// Why a server address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server address {0:?} must start with ws://, wss://, http:// or https://")]
pub struct BadServerUrl(pub String);

/// Splits a server address into (secure, host-and-port, path).
fn split(server: &str) -> Result<(bool, &str, &str), BadServerUrl> {
    let s = server.trim();
    let (secure, rest) = if let Some(r) = s.strip_prefix("ws://") {
        (false, r)
    } else if let Some(r) = s.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = s.strip_prefix("wss://") {
        (true, r)
    } else if let Some(r) = s.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(BadServerUrl(server.to_owned()));
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(BadServerUrl(server.to_owned()));
    }
    Ok((secure, host, path.trim_end_matches('/')))
}

/// The base path a server is mounted at: the given path without a final
/// `/ws` or `/api/...`.
fn base_path(path: &str) -> &str {
    if let Some(p) = path.strip_suffix("/ws") {
        return p;
    }
    match path.find("/api/") {
        Some(i) => &path[..i],
        None => path,
    }
}

/// The WebSocket signaling URL: `ws[s]://HOST[:PORT][/base]/ws`.
///
/// ```
/// use kaigi_proto::endpoint::signaling_url;
/// assert_eq!(signaling_url("http://127.0.0.1:7880").unwrap(), "ws://127.0.0.1:7880/ws");
/// assert_eq!(signaling_url("wss://k.example/ws").unwrap(), "wss://k.example/ws");
/// ```
pub fn signaling_url(server: &str) -> Result<String, BadServerUrl> {
    let (secure, host, path) = split(server)?;
    let scheme = if secure { "wss" } else { "ws" };
    Ok(format!("{scheme}://{host}{}/ws", base_path(path)))
}

/// The admin API URL for `action`: `http[s]://HOST[:PORT][/base]/api/ACTION`.
///
/// ```
/// use kaigi_proto::endpoint::api_url;
/// assert_eq!(api_url("ws://127.0.0.1:7880", "DismissRoom").unwrap(), "http://127.0.0.1:7880/api/DismissRoom");
/// ```
pub fn api_url(server: &str, action: &str) -> Result<String, BadServerUrl> {
    let (secure, host, path) = split(server)?;
    let scheme = if secure { "https" } else { "http" };
    Ok(format!("{scheme}://{host}{}/api/{action}", base_path(path)))
}

/// The Cloud API 3.0 endpoint (`POST /`) and the `Host` it is signed
/// for: `(http[s]://HOST[:PORT][/base]/, HOST[:PORT])`.
///
/// ```
/// use kaigi_proto::endpoint::cloud_api_url;
/// assert_eq!(cloud_api_url("ws://127.0.0.1:7880/ws").unwrap(), ("http://127.0.0.1:7880/".to_owned(), "127.0.0.1:7880".to_owned()));
/// ```
pub fn cloud_api_url(server: &str) -> Result<(String, String), BadServerUrl> {
    let (secure, host, path) = split(server)?;
    let scheme = if secure { "https" } else { "http" };
    Ok((
        format!("{scheme}://{host}{}/", base_path(path)),
        host.to_owned(),
    ))
}

/// The invite endpoint for `code`: `http[s]://HOST[:PORT][/base]/invite/CODE`.
///
/// ```
/// use kaigi_proto::endpoint::invite_url;
/// assert_eq!(invite_url("ws://127.0.0.1:7880/ws", "k3m-9xq2-7hd").unwrap(), "http://127.0.0.1:7880/invite/k3m-9xq2-7hd");
/// ```
pub fn invite_url(server: &str, code: &str) -> Result<String, BadServerUrl> {
    let (secure, host, path) = split(server)?;
    let scheme = if secure { "https" } else { "http" };
    Ok(format!(
        "{scheme}://{host}{}/invite/{code}",
        base_path(path)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_maps() {
        for (given, ws, api) in [
            ("ws://h:1", "ws://h:1/ws", "http://h:1/api/X"),
            ("ws://h:1/", "ws://h:1/ws", "http://h:1/api/X"),
            ("ws://h:1/ws", "ws://h:1/ws", "http://h:1/api/X"),
            ("http://h:1", "ws://h:1/ws", "http://h:1/api/X"),
            ("https://h", "wss://h/ws", "https://h/api/X"),
            (
                "wss://h/kaigi/ws",
                "wss://h/kaigi/ws",
                "https://h/kaigi/api/X",
            ),
            (
                "http://[::1]:7/api/Y",
                "ws://[::1]:7/ws",
                "http://[::1]:7/api/X",
            ),
        ] {
            assert_eq!(signaling_url(given).unwrap(), ws, "{given}");
            assert_eq!(api_url(given, "X").unwrap(), api, "{given}");
        }
        assert!(signaling_url("127.0.0.1:7880").is_err());
        assert!(signaling_url("ws://").is_err());
    }
}

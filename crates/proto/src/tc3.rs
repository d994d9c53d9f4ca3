//! Tencent Cloud API 3.0 request signing, `TC3-HMAC-SHA256`, as every
//! official tencentcloud SDK builds it (`docs/admin-api.md`, "Cloud API
//! 3.0"): the server checks requests with it, and Kaigi's own tools sign
//! with it.
//!
//! 1. The canonical request: method, URI, query, each signed header as
//!    `name:value` (lower case, trimmed), the signed header names, and the
//!    hex SHA-256 of the body.
//! 2. The string to sign: `TC3-HMAC-SHA256`, the timestamp, the credential
//!    scope `DATE/SERVICE/tc3_request` and the hex SHA-256 of (1).
//! 3. The key: HMAC-SHA256 chained from `"TC3" + SecretKey` over the date,
//!    the service and `tc3_request`; the signature is the hex HMAC of (2).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The one algorithm.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";
/// TRTC's API version.
pub const TRTC_VERSION: &str = "2019-07-22";
/// TRTC's service name in the credential scope.
pub const TRTC_SERVICE: &str = "trtc";
/// A request's timestamp may differ from the server's clock by this much
/// (Tencent Cloud's five minutes).
pub const MAX_SKEW_SECS: u64 = 300;

/// Why an `Authorization` header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the Authorization header is not TC3-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…: {0}")]
pub struct AuthorizationError(pub String);

/// A parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The SecretId.
    pub secret_id: String,
    /// The scope's date, `YYYY-MM-DD` (UTC).
    pub date: String,
    /// The scope's service (`trtc`).
    pub service: String,
    /// The signed headers' names, lower case, as given.
    pub signed_headers: Vec<String>,
    /// The hex signature.
    pub signature: String,
}

impl std::str::FromStr for Authorization {
    type Err = AuthorizationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |m: &str| AuthorizationError(m.to_owned());
        let rest = s
            .trim()
            .strip_prefix(ALGORITHM)
            .ok_or_else(|| bad("the algorithm must be TC3-HMAC-SHA256"))?;
        let mut credential = None;
        let mut signed = None;
        let mut signature = None;
        for part in rest.split(',') {
            let (k, v) = part
                .trim()
                .split_once('=')
                .ok_or_else(|| bad("a part without '='"))?;
            match k.trim() {
                "Credential" => credential = Some(v.trim()),
                "SignedHeaders" => signed = Some(v.trim()),
                "Signature" => signature = Some(v.trim()),
                _ => return Err(bad("an unknown part")),
            }
        }
        let (credential, signed, signature) = match (credential, signed, signature) {
            (Some(c), Some(h), Some(s)) => (c, h, s),
            _ => return Err(bad("Credential, SignedHeaders and Signature are required")),
        };
        let scope: Vec<&str> = credential.split('/').collect();
        let [secret_id, date, service, "tc3_request"] = scope[..] else {
            return Err(bad("Credential must be SECRETID/DATE/SERVICE/tc3_request"));
        };
        if secret_id.is_empty() || date.len() != 10 || service.is_empty() {
            return Err(bad("Credential must be SECRETID/DATE/SERVICE/tc3_request"));
        }
        let signed_headers: Vec<String> = signed.split(';').map(str::to_ascii_lowercase).collect();
        if signed_headers.iter().any(String::is_empty) {
            return Err(bad("an empty signed header name"));
        }
        if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the signature must be 64 hex digits"));
        }
        Ok(Authorization {
            secret_id: secret_id.to_owned(),
            date: date.to_owned(),
            service: service.to_owned(),
            signed_headers,
            signature: signature.to_ascii_lowercase(),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// The canonical request of (1). `headers` are the signed headers' names
/// and values in `signed_headers`' order.
pub fn canonical_request(
    method: &str,
    uri: &str,
    query: &str,
    headers: &[(&str, &str)],
    payload_hash: &str,
) -> String {
    let mut canonical_headers = String::new();
    for (name, value) in headers {
        canonical_headers.push_str(&name.to_ascii_lowercase());
        canonical_headers.push(':');
        canonical_headers.push_str(&value.trim().to_ascii_lowercase());
        canonical_headers.push('\n');
    }
    let signed: Vec<String> = headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    format!(
        "{method}\n{uri}\n{query}\n{canonical_headers}\n{}\n{payload_hash}",
        signed.join(";")
    )
}

/// The signature (3) of a canonical request made at `timestamp` for
/// `service`, with the credential scope's `date`.
pub fn signature(
    secret_key: &str,
    date: &str,
    service: &str,
    timestamp: u64,
    canonical_request: &str,
) -> String {
    let scope = format!("{date}/{service}/tc3_request");
    let to_sign = format!(
        "{ALGORITHM}\n{timestamp}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let k_date = hmac(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let k_service = hmac(&k_date, service.as_bytes());
    let k_signing = hmac(&k_service, b"tc3_request");
    hex(&hmac(&k_signing, to_sign.as_bytes()))
}

/// Whether two hex signatures are equal, in time independent of where
/// they differ.
pub fn same_signature(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The UTC date (`YYYY-MM-DD`) of Unix time `secs`.
pub fn utc_date(secs: u64) -> String {
    // Days to a civil date (proleptic Gregorian), after H. Hinnant.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The headers of a signed `POST /` of JSON `body` to `host`, as the
/// official SDKs send it: `Content-Type`, `Host`, `X-TC-Action`,
/// `X-TC-Version`, `X-TC-Timestamp`, `X-TC-Region` (if any) and
/// `Authorization`.
#[allow(clippy::too_many_arguments)]
pub fn sign_post(
    secret_id: &str,
    secret_key: &str,
    host: &str,
    action: &str,
    region: Option<&str>,
    timestamp: u64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let content_type = "application/json";
    let canonical = canonical_request(
        "POST",
        "/",
        "",
        &[("content-type", content_type), ("host", host)],
        &sha256_hex(body),
    );
    let date = utc_date(timestamp);
    let sig = signature(secret_key, &date, TRTC_SERVICE, timestamp, &canonical);
    let mut headers = vec![
        ("Content-Type", content_type.to_owned()),
        ("Host", host.to_owned()),
        ("X-TC-Action", action.to_owned()),
        ("X-TC-Version", TRTC_VERSION.to_owned()),
        ("X-TC-Timestamp", timestamp.to_string()),
    ];
    if let Some(r) = region {
        headers.push(("X-TC-Region", r.to_owned()));
    }
    headers.push((
        "Authorization",
        format!(
            "{ALGORITHM} Credential={secret_id}/{date}/{TRTC_SERVICE}/tc3_request, SignedHeaders=content-type;host, Signature={sig}"
        ),
    ));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_signs_alike() {
        // Tencent Cloud's published example request (CVM DescribeInstances,
        // POST, 2019-02-25, the example key), signed as the official
        // tencentcloud-sdk-python-common 3.1 (`Sign.sign_tc3`) signs it.
        let body = br#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
        let canonical = canonical_request(
            "POST",
            "/",
            "",
            &[
                ("content-type", "application/json; charset=utf-8"),
                ("host", "cvm.tencentcloudapi.com"),
            ],
            &sha256_hex(body),
        );
        assert_eq!(
            sha256_hex(body),
            "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        let sig = signature(
            "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
            "2019-02-25",
            "cvm",
            1551113065,
            &canonical,
        );
        assert_eq!(
            sig,
            "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
    }

    #[test]
    fn authorization_headers_parse() {
        let h = "TC3-HMAC-SHA256 Credential=AKIDEXAMPLE/2019-02-25/cvm/tc3_request, SignedHeaders=content-type;host, Signature=2230eefd229f582d8b1b891af7107b91597240707d778ab3738f756258d7652c";
        let a: Authorization = h.parse().unwrap();
        assert_eq!(a.secret_id, "AKIDEXAMPLE");
        assert_eq!(a.date, "2019-02-25");
        assert_eq!(a.service, "cvm");
        assert_eq!(a.signed_headers, ["content-type", "host"]);
        for bad in [
            "",
            "HMAC-SHA256 Credential=a/2019-02-25/cvm/tc3_request, SignedHeaders=host, Signature=00",
            "TC3-HMAC-SHA256 Credential=a/2019-02-25/cvm, SignedHeaders=host, Signature=2230eefd229f582d8b1b891af7107b91597240707d778ab3738f756258d7652c",
            "TC3-HMAC-SHA256 Credential=a/2019-02-25/cvm/tc3_request, Signature=2230eefd229f582d8b1b891af7107b91597240707d778ab3738f756258d7652c",
            "TC3-HMAC-SHA256 Credential=a/2019-02-25/cvm/tc3_request, SignedHeaders=host, Signature=xyz",
        ] {
            assert!(bad.parse::<Authorization>().is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(1551113065), "2019-02-25");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_798_761_599), "2026-12-31");
    }

    #[test]
    fn signatures_compare_whole() {
        assert!(same_signature("ab", "ab"));
        assert!(!same_signature("ab", "ac"));
        assert!(!same_signature("ab", "abc"));
    }
}

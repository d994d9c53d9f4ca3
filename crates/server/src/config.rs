//! Server configuration: flags, environment, a TOML file, and dev mode.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kaigi_proto::SdkAppId;
use serde::{Deserialize, Serialize};

/// One application: its id and secret key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppCredential {
    /// The SdkAppId.
    pub id: SdkAppId,
    /// The secret key UserSigs are signed with.
    pub key: String,
}

impl std::str::FromStr for AppCredential {
    type Err = String;
    /// Parses `ID:SECRETKEY`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (id, key) = s
            .split_once(':')
            .ok_or_else(|| format!("expected ID:SECRETKEY, got {s:?}"))?;
        let id: SdkAppId = id.trim().parse().map_err(|e| format!("{e}: {id:?}"))?;
        if key.is_empty() {
            return Err("the secret key is empty".into());
        }
        Ok(AppCredential {
            id,
            key: key.to_owned(),
        })
    }
}

/// A Tencent Cloud API 3.0 key pair the admin API accepts
/// (`TC3-HMAC-SHA256`), and the apps it may act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudApiKey {
    /// The SecretId (public).
    pub secret_id: String,
    /// The SecretKey requests are signed with.
    pub secret_key: String,
    /// The apps it may act on; empty: every app of the server.
    #[serde(default)]
    pub apps: Vec<SdkAppId>,
}

impl CloudApiKey {
    /// Whether it may act on `app`.
    pub fn may_act_on(&self, app: SdkAppId) -> bool {
        self.apps.is_empty() || self.apps.contains(&app)
    }
}

impl std::str::FromStr for CloudApiKey {
    type Err = String;
    /// Parses `SECRETID:SECRETKEY[:APP[+APP…]]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.splitn(3, ':');
        let (Some(id), Some(key)) = (parts.next(), parts.next()) else {
            return Err(format!(
                "expected SECRETID:SECRETKEY[:APP[+APP…]], got {s:?}"
            ));
        };
        let id = id.trim();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("a SecretId is printable ASCII, not {id:?}"));
        }
        if key.is_empty() {
            return Err("the SecretKey is empty".into());
        }
        let apps = match parts.next() {
            None => Vec::new(),
            Some(list) => list
                .split('+')
                .map(|a| a.trim().parse().map_err(|e| format!("{e}: {a:?}")))
                .collect::<Result<_, _>>()?,
        };
        Ok(CloudApiKey {
            secret_id: id.to_owned(),
            secret_key: key.to_owned(),
            apps,
        })
    }
}

/// Per-connection message rate limit (a token bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages per second sustained.
    pub per_sec: u32,
    /// Messages allowed in a burst.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_sec: 50,
            burst: 100,
        }
    }
}

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the one HTTP listener (signaling, admin API, metrics).
    pub listen: SocketAddr,
    /// Applications this server accepts.
    pub apps: Vec<AppCredential>,
    /// A connection silent this long is dropped and leaves its room.
    pub heartbeat_timeout: Duration,
    /// Per-connection message rate limit.
    pub rate_limit: RateLimit,
    /// The address media (WebRTC over UDP) binds to; by default the
    /// listener's IP.
    pub media_ip: Option<std::net::IpAddr>,
    /// The address clients reach media at when a 1:1 NAT stands between
    /// (a cloud VM's public IP): advertised instead of the media IP.
    pub external_ip: Option<std::net::IpAddr>,
    /// The one UDP port all media goes through (0: any free port; the
    /// `kaigi-server` binary's default is [`kaigi_rtc::DEFAULT_MEDIA_PORT`]).
    pub media_port: u16,
    /// The one TCP port for media over TCP, where UDP is blocked; by
    /// default the same number as `media_port`.
    pub media_tcp_port: Option<u16>,
    /// Open connections in all; by default what the open-file limit allows
    /// (see [`crate::listener::connections_for_fd_limit`]).
    pub max_connections: Option<usize>,
    /// Open connections from one IP address; 0 for no cap. Behind a
    /// reverse proxy every client has the proxy's address: set 0 there.
    pub max_connections_per_ip: usize,
    /// The newest signaling protocol version served (`kaigi_proto::
    /// MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION`): an older one keeps the
    /// nodes of a service speaking one version while they are upgraded
    /// one by one (clients fall back to it).
    pub max_protocol: u32,
    /// Serve TLS (`wss://`, `https://`) with this certificate chain and
    /// key (PEM files); plain `ws://` without.
    pub tls: Option<TlsFiles>,
    /// Join a service of several nodes on Redis (see [`crate::cluster`]);
    /// an empty `node_id` is generated, an empty `advertise` is this
    /// node's own `ws(s)://LISTEN/ws` (which must then not be a wildcard
    /// address).
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Key pairs for the admin API's Cloud API 3.0 endpoint (`POST /`).
    pub cloud_api_keys: Vec<CloudApiKey>,
    /// Admin calls one app may make of one action (TRTC's 20 a second).
    pub admin_rate_limit: RateLimit,
    /// Apps whose users may enter a room only with a room grant (TRTC's
    /// `privateMapKey`, in the join or in the UserSig).
    pub require_room_grant: Vec<SdkAppId>,
    /// Where apps' room events are POSTed (TRTC's room callbacks).
    pub webhooks: Vec<crate::webhooks::Webhook>,
    /// When webhook deliveries are retried and given up.
    pub webhook_policy: crate::webhooks::WebhookPolicy,
}

/// TRTC's limit on its server APIs: 20 requests a second per action.
pub const ADMIN_RATE_LIMIT: RateLimit = RateLimit {
    per_sec: 20,
    burst: 20,
};

/// The PEM files of the server's TLS certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// The default cap on connections from one IP address: an office or a
/// school behind one NAT address fits; one host cannot take every slot.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;

pub use kaigi_rtc::DEFAULT_MEDIA_PORT;

/// The default heartbeat timeout, well under TRTC's 90 s.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(20);

impl Config {
    /// A config for `listen` with the given apps and defaults otherwise.
    pub fn new(listen: SocketAddr, apps: Vec<AppCredential>) -> Self {
        Config {
            listen,
            apps,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            rate_limit: RateLimit::default(),
            media_ip: None,
            max_connections: None,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_protocol: kaigi_proto::PROTOCOL_VERSION,
            tls: None,
            external_ip: None,
            media_port: 0,
            media_tcp_port: None,
            cluster: None,
            cloud_api_keys: Vec::new(),
            admin_rate_limit: ADMIN_RATE_LIMIT,
            require_room_grant: Vec::new(),
            webhooks: Vec::new(),
            webhook_policy: Default::default(),
        }
    }

    /// The IP media binds to.
    pub fn media_ip(&self) -> std::net::IpAddr {
        self.media_ip.unwrap_or(self.listen.ip())
    }

    /// The apps as a lookup table.
    pub fn app_keys(&self) -> HashMap<SdkAppId, String> {
        self.apps.iter().map(|a| (a.id, a.key.clone())).collect()
    }
}

/// The TOML config file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `listen = "127.0.0.1:7880"`
    pub listen: Option<SocketAddr>,
    /// `heartbeat_timeout = 20` (seconds)
    pub heartbeat_timeout: Option<u64>,
    /// `[[app]]` tables with `id` and `key`.
    #[serde(default, rename = "app")]
    pub apps: Vec<AppCredential>,
    /// `rate_limit_per_sec = 50`
    pub rate_limit_per_sec: Option<u32>,
    /// `rate_limit_burst = 100`
    pub rate_limit_burst: Option<u32>,
    /// `media_ip = "192.168.1.10"`: where WebRTC media binds.
    pub media_ip: Option<std::net::IpAddr>,
    /// `external_ip = "203.0.113.50"`: the 1:1 NAT address clients reach.
    pub external_ip: Option<std::net::IpAddr>,
    /// `media_port = 7882`: the UDP (and TCP) port of all media.
    pub media_port: Option<u16>,
    /// `media_tcp_port = 443`: the TCP port of media, if not `media_port`.
    pub media_tcp_port: Option<u16>,
    /// `max_connections = 10000`
    pub max_connections: Option<usize>,
    /// `max_connections_per_ip = 256` (0: no cap)
    pub max_connections_per_ip: Option<usize>,
    /// `max_protocol = 6`: the newest signaling protocol served.
    pub max_protocol: Option<u32>,
    /// `tls_cert = "/etc/kaigi/cert.pem"` (with `tls_key`)
    pub tls_cert: Option<PathBuf>,
    /// `tls_key = "/etc/kaigi/key.pem"` (with `tls_cert`)
    pub tls_key: Option<PathBuf>,
    /// `redis = "redis://10.0.0.5:6379"`: join a service of several nodes.
    pub redis: Option<String>,
    /// `node_id = "kaigi-1"` (with `redis`; default: generated).
    pub node_id: Option<String>,
    /// `advertise = "wss://kaigi-1.example.com/ws"` (with `redis`): where
    /// clients reach this node.
    pub advertise: Option<String>,
    /// `[[cloud_api_key]]` tables with `secret_id`, `secret_key` and
    /// optionally `apps = [1400000000]`.
    #[serde(default, rename = "cloud_api_key")]
    pub cloud_api_keys: Vec<CloudApiKey>,
    /// `require_room_grant = [1400000000]`: apps whose users need a room
    /// grant (`privateMapKey`) to enter.
    #[serde(default)]
    pub require_room_grant: Vec<SdkAppId>,
    /// `[[webhook]]` tables with `app`, `url` and optionally `key`.
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<crate::webhooks::Webhook>,
}

impl FileConfig {
    /// Reads a TOML config file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

pub use kaigi_proto::devapp::DevApp;

/// Where the dev app is saved (see [`kaigi_proto::devapp::dev_app_path`]).
pub fn dev_app_path() -> Option<PathBuf> {
    kaigi_proto::devapp::dev_app_path(
        std::env::var_os(kaigi_proto::devapp::DEV_APP_ENV),
        dirs::config_dir(),
    )
}

/// Loads, makes and saves the dev app.
pub trait DevAppExt: Sized {
    /// Loads the saved dev app, if there is one.
    fn load() -> Option<Self>;
    /// Makes a fresh app id and a random 256-bit key.
    fn generate() -> Self;
    /// The saved app, or a new one.
    fn load_or_generate() -> Self {
        Self::load().unwrap_or_else(Self::generate)
    }
    /// Saves it (owner-readable only) and returns the path.
    fn save(&self) -> std::io::Result<PathBuf>;
    /// As an app credential.
    fn credential(&self) -> AppCredential;
}

impl DevAppExt for DevApp {
    fn load() -> Option<Self> {
        let text = std::fs::read_to_string(dev_app_path()?).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn generate() -> Self {
        use rand::Rng;
        let mut rng = rand::rng();
        let key: [u8; 32] = rng.random();
        DevApp {
            sdk_app_id: SdkAppId(rng.random_range(1_400_000_000..1_500_000_000)),
            secret_key: key.iter().map(|b| format!("{b:02x}")).collect(),
            server: None,
        }
    }

    fn save(&self) -> std::io::Result<PathBuf> {
        let path = dev_app_path()
            .ok_or_else(|| std::io::Error::other("no config directory (set KAIGI_DEV_APP)"))?;
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        write_private(&path, text.as_bytes())?;
        Ok(path)
    }

    fn credential(&self) -> AppCredential {
        AppCredential {
            id: self.sdk_app_id,
            key: self.secret_key.clone(),
        }
    }
}

/// Reads a duration in whole seconds, refusing zero.
pub fn secs(n: u64) -> Result<Duration, String> {
    if n == 0 {
        return Err("must be at least 1 second".into());
    }
    Ok(Duration::from_secs(n))
}

/// Writes `bytes` to `path` so that no other local user can ever read
/// them: the folder is made owner-only, and the file is private from its
/// creation (a temporary file moved into place), never widened later.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&tmp).and_then(|mut f| {
        use std::io::Write;
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn private_files_are_private_from_the_start() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("kaigi-private-{}", rand::random::<u64>()));
        let path = root.join("kaigi").join("dev-app.json");
        write_private(&path, b"{\"secretKey\":\"k\"}").unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        // Replacing it keeps it private and leaves no temporary file.
        write_private(&path, b"{}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn app_flag_parses() {
        let a: AppCredential = "1400000000:abc:def".parse().unwrap();
        assert_eq!(a.id, SdkAppId(1400000000));
        assert_eq!(a.key, "abc:def");
        assert!("nokey".parse::<AppCredential>().is_err());
        assert!("0:k".parse::<AppCredential>().is_err());
        assert!("12:".parse::<AppCredential>().is_err());
    }

    #[test]
    fn file_config_parses() {
        let f: FileConfig = toml::from_str(
            "listen = \"127.0.0.1:1\"\nheartbeat_timeout = 5\n[[app]]\nid = 7\nkey = \"k\"\n",
        )
        .unwrap();
        assert_eq!(
            f.apps,
            vec![AppCredential {
                id: SdkAppId(7),
                key: "k".into()
            }]
        );
        assert_eq!(f.heartbeat_timeout, Some(5));
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
        let f: FileConfig = toml::from_str(
            "[[cloud_api_key]]\nsecret_id = \"AKIDa\"\nsecret_key = \"s\"\napps = [7]\n",
        )
        .unwrap();
        assert_eq!(f.cloud_api_keys[0].apps, [SdkAppId(7)]);
    }

    #[test]
    fn cloud_api_key_flag_parses() {
        let k: CloudApiKey = "AKIDa:secret".parse().unwrap();
        assert_eq!(
            (k.secret_id.as_str(), k.secret_key.as_str()),
            ("AKIDa", "secret")
        );
        assert!(k.may_act_on(SdkAppId(9)));
        let k: CloudApiKey = "AKIDa:secret:1400000000+1400000001".parse().unwrap();
        assert_eq!(k.apps, [SdkAppId(1400000000), SdkAppId(1400000001)]);
        assert!(!k.may_act_on(SdkAppId(9)));
        for bad in ["AKIDa", ":k", "AKIDa:", "AKIDa:k:x"] {
            assert!(bad.parse::<CloudApiKey>().is_err(), "{bad}");
        }
    }
}

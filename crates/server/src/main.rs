//! The `kaigi-server` binary: flags, environment and config file, dev mode.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kaigi_server::config::{
    secs, AppCredential, CloudApiKey, Config, DevApp, DevAppExt, FileConfig, RateLimit, TlsFiles,
};
use tracing_subscriber::EnvFilter;

/// Kaigi's room server: WebSocket signaling, rooms, and the admin API.
#[derive(Debug, Parser)]
#[command(name = "kaigi-server", version)]
struct Args {
    /// A TOML config file (listen, heartbeat_timeout, [[app]] id/key).
    #[arg(long, env = "KAIGI_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7880].
    #[arg(long, env = "KAIGI_LISTEN")]
    listen: Option<SocketAddr>,
    /// An application as ID:SECRETKEY; repeat for several. With none, dev
    /// mode makes one and saves it where the kaigi CLI finds it.
    #[arg(long = "app", env = "KAIGI_APPS", value_delimiter = ',')]
    apps: Vec<AppCredential>,
    /// Seconds of silence after which a client is dropped [default: 20].
    #[arg(long, env = "KAIGI_HEARTBEAT_TIMEOUT")]
    heartbeat_timeout: Option<u64>,
    /// The IP WebRTC media binds to [default: the --listen IP].
    #[arg(long, env = "KAIGI_MEDIA_IP")]
    media_ip: Option<std::net::IpAddr>,
    /// The address clients reach media at, behind a 1:1 NAT (a cloud VM's
    /// public IP): advertised in ICE candidates instead of the media IP.
    #[arg(long, env = "KAIGI_EXTERNAL_IP")]
    external_ip: Option<std::net::IpAddr>,
    /// The one UDP port all media goes through, and the TCP port for media
    /// where UDP is blocked (0: any free port) [default: 7882].
    #[arg(long, env = "KAIGI_MEDIA_PORT")]
    media_port: Option<u16>,
    /// A TCP port for media other than --media-port (e.g. 443 on an address
    /// of its own, for networks that let only HTTPS out).
    #[arg(long, env = "KAIGI_MEDIA_TCP_PORT")]
    media_tcp_port: Option<u16>,
    /// Open connections in all [default: what the open-file limit allows].
    #[arg(long, env = "KAIGI_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Open connections from one IP address, 0 for no cap [default: 256].
    /// Set 0 behind a reverse proxy.
    #[arg(long, env = "KAIGI_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// The newest signaling protocol version to serve [default: the
    /// newest this server speaks]; an older one keeps a service's nodes on
    /// one version while they are upgraded one by one.
    #[arg(long, env = "KAIGI_MAX_PROTOCOL")]
    max_protocol: Option<u32>,
    /// Serve TLS (wss://, https://) with this certificate chain (PEM).
    #[arg(long, env = "KAIGI_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(long, env = "KAIGI_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Join a service of several nodes on this Redis (redis://HOST:PORT).
    #[arg(long, env = "KAIGI_REDIS")]
    redis: Option<String>,
    /// This node's id in the service [default: generated].
    #[arg(long, env = "KAIGI_NODE_ID")]
    node_id: Option<String>,
    /// Where clients reach this node's signaling, e.g.
    /// wss://kaigi-1.example.com/ws [default: ws(s)://LISTEN/ws].
    #[arg(long, env = "KAIGI_ADVERTISE")]
    advertise: Option<String>,
    /// A Tencent Cloud API 3.0 key pair the admin API accepts at `POST /`
    /// (TC3-HMAC-SHA256), as SECRETID:SECRETKEY, or
    /// SECRETID:SECRETKEY:APP+APP for the apps it may act on [default:
    /// every app]; repeat for several (';' between them in the variable).
    #[arg(
        long = "cloud-api-key",
        env = "KAIGI_CLOUD_API_KEYS",
        value_delimiter = ';'
    )]
    cloud_api_keys: Vec<CloudApiKey>,
    /// An app whose users may enter a room only with a room grant (TRTC's
    /// privateMapKey, from the app's backend); repeat for several.
    #[arg(
        long = "require-room-grant",
        env = "KAIGI_REQUIRE_ROOM_GRANT",
        value_delimiter = ','
    )]
    require_room_grant: Vec<kaigi_proto::SdkAppId>,
    /// Where an app's room events go (TRTC's room callbacks), as APP=URL;
    /// repeat for several.
    #[arg(long = "webhook", env = "KAIGI_WEBHOOKS", value_delimiter = ' ')]
    webhooks: Vec<kaigi_server::webhooks::Webhook>,
    /// The callback key an app's webhooks are signed with (`Sign`), as
    /// APP=KEY.
    #[arg(
        long = "webhook-key",
        env = "KAIGI_WEBHOOK_KEYS",
        value_delimiter = ' '
    )]
    webhook_keys: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_env("KAIGI_LOG")
                .unwrap_or_else(|_| EnvFilter::new(kaigi_proto::log_filter("info"))),
        )
        .init();
    let args = Args::parse();
    let file = match &args.config {
        Some(p) => FileConfig::load(p).map_err(anyhow::Error::msg)?,
        None => FileConfig::default(),
    };
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7880)));
    let mut apps = if args.apps.is_empty() {
        file.apps
    } else {
        args.apps
    };
    let dev = if apps.is_empty() {
        let dev = DevApp::load_or_generate();
        apps.push(dev.credential());
        Some(dev)
    } else {
        None
    };
    let mut config = Config::new(listen, apps);
    if let Some(t) = args.heartbeat_timeout.or(file.heartbeat_timeout) {
        config.heartbeat_timeout = secs(t)
            .map_err(anyhow::Error::msg)
            .context("--heartbeat-timeout")?;
    }
    config.media_ip = args.media_ip.or(file.media_ip);
    config.external_ip = args.external_ip.or(file.external_ip);
    config.media_port = args
        .media_port
        .or(file.media_port)
        .unwrap_or(kaigi_server::config::DEFAULT_MEDIA_PORT);
    config.media_tcp_port = args.media_tcp_port.or(file.media_tcp_port);
    config.max_connections = args.max_connections.or(file.max_connections);
    if let Some(n) = args.max_connections_per_ip.or(file.max_connections_per_ip) {
        config.max_connections_per_ip = n;
    }
    if let Some(v) = args.max_protocol.or(file.max_protocol) {
        let known = kaigi_proto::MIN_PROTOCOL_VERSION..=kaigi_proto::PROTOCOL_VERSION;
        anyhow::ensure!(
            known.contains(&v),
            "--max-protocol {v}: this server speaks protocols {} to {}",
            known.start(),
            known.end()
        );
        config.max_protocol = v;
    }
    config.tls = match (
        args.tls_cert.or(file.tls_cert),
        args.tls_key.or(file.tls_key),
    ) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        _ => anyhow::bail!("TLS needs both a certificate and a key (--tls-cert, --tls-key)"),
    };
    let scheme = if config.tls.is_some() { "wss" } else { "ws" };
    config.cluster = match args.redis.or(file.redis) {
        Some(redis) => Some(kaigi_server::cluster::ClusterConfig::new(
            &redis,
            &args.node_id.or(file.node_id).unwrap_or_default(),
            &args.advertise.or(file.advertise).unwrap_or_default(),
        )),
        None => {
            if args.node_id.is_some() || args.advertise.is_some() {
                anyhow::bail!("--node-id and --advertise belong to a service: give --redis too");
            }
            None
        }
    };
    config.cloud_api_keys = if args.cloud_api_keys.is_empty() {
        file.cloud_api_keys
    } else {
        args.cloud_api_keys
    };
    config.require_room_grant = if args.require_room_grant.is_empty() {
        file.require_room_grant
    } else {
        args.require_room_grant
    };
    config.webhooks = if args.webhooks.is_empty() {
        file.webhooks
    } else {
        args.webhooks
    };
    for pair in &args.webhook_keys {
        let (app, key) = pair
            .split_once('=')
            .with_context(|| format!("--webhook-key takes APP=KEY, not {pair:?}"))?;
        let app: kaigi_proto::SdkAppId = app
            .trim()
            .parse()
            .map_err(anyhow::Error::msg)
            .context("--webhook-key")?;
        for hook in config.webhooks.iter_mut().filter(|h| h.app == app) {
            hook.key = Some(key.to_owned());
        }
    }
    let defaults = RateLimit::default();
    config.rate_limit = RateLimit {
        per_sec: file.rate_limit_per_sec.unwrap_or(defaults.per_sec),
        burst: file.rate_limit_burst.unwrap_or(defaults.burst),
    };
    let handle = kaigi_server::start(config)
        .await
        .with_context(|| format!("cannot serve on {listen}"))?;
    let url = format!("{scheme}://{}", handle.local_addr());
    if let Some(mut dev) = dev {
        dev.server = Some(url.clone());
        let saved = dev.save().context("saving the dev app")?;
        println!("Kaigi server (dev mode) listening on {url}");
        println!("  SdkAppId:  {}", dev.sdk_app_id);
        println!("  SecretKey: {}", dev.secret_key);
        println!("  saved to {} (the kaigi CLI reads it)", saved.display());
        println!("Join a bot:    kaigi bot --user alice --room 1");
        println!("Dismiss room:  kaigi admin dismiss-room --room 1");
    } else {
        println!("Kaigi server listening on {url}");
    }
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            r.context("waiting for Ctrl-C")?;
            handle.shutdown().await;
        }
        r = wait_terminate() => {
            r?;
            handle.shutdown().await;
        }
    }
    Ok(())
}

#[cfg(unix)]
async fn wait_terminate() -> anyhow::Result<()> {
    let mut s = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    s.recv().await;
    Ok(())
}

#[cfg(not(unix))]
async fn wait_terminate() -> anyhow::Result<()> {
    std::future::pending().await
}

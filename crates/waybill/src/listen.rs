//! `waybill listen`: a local webhook receiver that prints what arrives.

use std::net::SocketAddr;
use std::sync::Arc;

use waybill_core::signing::SigningSecret;
use waybill_receiver::receiver::{Options, Receiver};

/// Options of `waybill listen`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 9000)]
    pub port: u16,
    /// Signing secret (`whsec_...`) to verify signatures with.
    #[arg(long, env = "WAYBILL_LISTEN_SECRET")]
    pub secret: Option<String>,
    /// Answer this status to every request (e.g. 500 to watch retries).
    #[arg(long, default_value_t = 200)]
    pub status: u16,
}

/// Runs the receiver until Ctrl-C.
pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let secret = match &args.secret {
        Some(s) => Some(SigningSecret::parse(s).map_err(|e| anyhow::anyhow!("--secret: {e}"))?),
        None => None,
    };
    let on_request = Arc::new(move |r: &waybill_receiver::Received| {
        let signature = match &secret {
            Some(secret) if r.signature_valid(secret) => "signature ok",
            Some(_) => "signature INVALID",
            None => "signature not checked (pass --secret)",
        };
        let body = serde_json::from_slice::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| String::from_utf8_lossy(&r.body).into_owned());
        #[allow(clippy::print_stdout)]
        {
            println!(
                "{} {} webhook-id={} ({signature})\n{body}\n",
                r.method,
                r.path,
                r.header("webhook-id").unwrap_or("-"),
            );
        }
    });
    let receiver = Receiver::with(Options {
        bind: Some(SocketAddr::from(([127, 0, 0, 1], args.port))),
        default_status: Some(args.status),
        on_request: Some(on_request),
        ..Options::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("cannot listen on 127.0.0.1:{}: {e}", args.port))?;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "listening on {} (answering {})",
            receiver.url("/"),
            args.status
        );
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}

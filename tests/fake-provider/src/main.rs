//! `fake-provider`: the fake upstream as a process, for the SDK suite and the benchmark.

use std::{io::Write, net::SocketAddr, time::Duration};

use clap::Parser;

/// A fake OpenAI-compatible LLM provider for tests and benchmarks (loopback only).
#[derive(Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Delay before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let fake = fake_provider::FakeProvider::start_with(
        args.listen,
        Duration::from_millis(args.latency_ms),
    )
    .await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "fake-provider listening on http://{}", fake.addr())?;
    stdout.flush()?;
    drop(stdout);
    tokio::signal::ctrl_c().await?;
    Ok(())
}

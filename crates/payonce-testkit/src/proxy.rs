//! A TCP proxy that can be switched off: "the broker is down" without stopping the machine's
//! shared broker. While down it accepts and immediately closes every connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub addr: String,
    up: Arc<AtomicBool>,
    /// Bumped to cut every live connection (a database or broker dropping its clients).
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    pub async fn start(target: &str, up: bool) -> std::io::Result<Self> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?.to_string();
        let flag = Arc::new(AtomicBool::new(up));
        let (cut, cut_rx) = tokio::sync::watch::channel(0u64);
        let (f, target) = (flag.clone(), target.to_owned());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = l.accept().await {
                if !f.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let (target, mut cut_rx) = (target.clone(), cut_rx.clone());
                // Only cuts from now on concern this connection.
                cut_rx.borrow_and_update();
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            // Both ends dropped mid-conversation, transactions and all. (Once the
                            // `Proxy` is dropped there are no more cuts: `Err` disables this arm —
                            // matching it instead cut every later connection at birth.)
                            Ok(()) = cut_rx.changed() => {}
                        }
                    }
                });
            }
        });
        Ok(Proxy {
            addr,
            up: flag,
            cut,
        })
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    /// Cuts every connection open through the proxy right now.
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

//! A TCP proxy that can be switched off: "the broker is down" without stopping the machine's
//! shared broker. While down it accepts and immediately closes every connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub addr: String,
    up: Arc<AtomicBool>,
}

impl Proxy {
    pub async fn start(target: &str, up: bool) -> std::io::Result<Self> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?.to_string();
        let flag = Arc::new(AtomicBool::new(up));
        let (f, target) = (flag.clone(), target.to_owned());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = l.accept().await {
                if !f.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Ok(Proxy { addr, up: flag })
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

//! The reader task of one connection.

use std::sync::atomic::{AtomicU64, Ordering as AtOrd};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use calyx_proto::message::decode_stream;
use calyx_proto::{Message, ParseContext};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};

use crate::rib::PeerId;
use crate::tasks::{Event, RibMsg};

/// Reads one connection: frames and decodes messages. Before Established every message goes
/// to the peer task; after, UPDATEs and ROUTE-REFRESHes go straight to the RIB task.
///
/// After the peer's OPEN, the reader keeps reading: a NOTIFICATION or a KEEPALIVE decodes the
/// same whatever the session negotiates, and the peer task must see a Cease that follows an
/// OPEN (the losing connection of a collision) without first accepting that OPEN. Only an
/// UPDATE or a ROUTE-REFRESH waits until the peer task hands over the negotiated context.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn reader(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    ev: mpsc::Sender<Event>,
    ctx_rx: oneshot::Receiver<ParseContext>,
    go_rx: oneshot::Receiver<u64>,
    rib: mpsc::Sender<RibMsg>,
    id: PeerId,
    last_rx: Arc<AtomicU64>,
    epoch: Instant,
) {
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut ctx = ParseContext::new();
    let mut ctx_rx = Some(ctx_rx);
    let mut go_rx = Some(go_rx);
    let mut generation: Option<u64> = None;
    let mut opened = false;
    loop {
        // Decode every complete message in the buffer.
        loop {
            let needs_ctx = opened && buf.get(18).is_some_and(|t| *t == 2 || *t == 5);
            if needs_ctx {
                if let Some(rx) = ctx_rx.take() {
                    match rx.await {
                        Ok(c) => ctx = c,
                        Err(_) => return,
                    }
                }
            }
            let res = decode_stream(&buf, &ctx);
            match res {
                Ok(None) => break,
                Err(e) => {
                    let _ = ev.send(Event::Decode(e.notification)).await;
                    return;
                }
                Ok(Some((msg, len))) => {
                    let _ = buf.split_to(len);
                    last_rx.store(epoch.elapsed().as_millis() as u64, AtOrd::Relaxed);
                    match (generation, msg) {
                        (Some(g), Message::Update(mut u)) => {
                            if !ctx.four_octet_as {
                                u.attributes.merge_as4();
                            }
                            if rib
                                .send(RibMsg::Update {
                                    id,
                                    generation: g,
                                    update: u,
                                })
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        (Some(g), Message::RouteRefresh(r)) => {
                            let _ = rib
                                .send(RibMsg::Refresh {
                                    id,
                                    generation: g,
                                    family: r.family,
                                    subtype: r.subtype,
                                })
                                .await;
                        }
                        (Some(_), Message::Keepalive) => {}
                        (_, msg) => {
                            let is_open = matches!(msg, Message::Open(_));
                            let is_ka = matches!(msg, Message::Keepalive);
                            if ev.send(Event::Msg(msg)).await.is_err() {
                                return;
                            }
                            if is_open {
                                opened = true;
                            } else if is_ka && opened && generation.is_none() {
                                // KEEPALIVE in OpenConfirm: wait until the RIB knows the
                                // session is up before handing it UPDATEs.
                                if let Some(rx) = go_rx.take() {
                                    match rx.await {
                                        Ok(g) => generation = Some(g),
                                        Err(_) => return,
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        if buf.capacity() - buf.len() < 65536 {
            buf.reserve(256 * 1024);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                let _ = ev.send(Event::Closed("end of stream".into())).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = ev.send(Event::Closed(e.to_string())).await;
                return;
            }
        }
    }
}

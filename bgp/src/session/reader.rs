//! The reader task of one connection.

use std::sync::atomic::{AtomicU64, Ordering as AtOrd};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use calyx_proto::message::decode_stream;
use calyx_proto::{Message, ParseContext};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};

use crate::rib::PeerId;
use crate::tasks::{Event, RibMsg};

/// The read buffer of a quiet session: a KEEPALIVE, an UPDATE or two. Most sessions of a mesh
/// or of a reflector's clients are quiet nearly all the time.
const BUF_SMALL: usize = 8 * 1024;

/// The read buffer of a session receiving a table: reads of this size keep the decoder busy
/// (the speaker benchmark's 1M prefixes arrive through it).
const BUF_LARGE: usize = 256 * 1024;

/// The room for the next read, after a read of `n` bytes into `spare` bytes of room: double
/// when the read filled it (more is waiting in the socket), back to small when a read took
/// less than a small buffer.
fn next_room(room: usize, n: usize, spare: usize) -> usize {
    if n >= spare {
        (room * 2).min(BUF_LARGE)
    } else if n < BUF_SMALL / 2 {
        BUF_SMALL
    } else {
        room
    }
}

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
    ev: mpsc::Sender<Box<Event>>,
    ctx_rx: oneshot::Receiver<ParseContext>,
    go_rx: oneshot::Receiver<u64>,
    rib: mpsc::Sender<RibMsg>,
    id: PeerId,
    last_rx: Arc<AtomicU64>,
    epoch: Instant,
) {
    let mut buf = BytesMut::with_capacity(BUF_SMALL);
    // How much room the next read gets: grows while reads fill all of it (a peer sending a
    // table), back to small once the peer is quiet again.
    let mut room = BUF_SMALL;
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
                    let _ = ev.send(Box::new(Event::Decode(e.notification))).await;
                    return;
                }
                Ok(Some((msg, len))) => {
                    buf.advance(len);
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
                            if ev.send(Box::new(Event::Msg(msg))).await.is_err() {
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
        if buf.is_empty() && room == BUF_SMALL && buf.capacity() > BUF_SMALL {
            // A burst is over: give its buffer back rather than keep up to BUF_LARGE per
            // session (a node in a 100-node mesh holds 99 of them).
            buf = BytesMut::with_capacity(BUF_SMALL);
        }
        if buf.capacity() - buf.len() < room {
            // Moves what is left of a partial message to the front when that makes the room.
            buf.reserve(room);
        }
        let spare = buf.capacity() - buf.len();
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                let _ = ev
                    .send(Box::new(Event::Closed("end of stream".into())))
                    .await;
                return;
            }
            Ok(n) => room = next_room(room, n, spare),
            Err(e) => {
                let _ = ev.send(Box::new(Event::Closed(e.to_string()))).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_grows_while_reads_fill_it_and_shrinks_when_quiet() {
        let mut room = BUF_SMALL;
        for _ in 0..10 {
            room = next_room(room, room, room);
        }
        assert_eq!(room, BUF_LARGE, "capped");
        // A read that does not fill a large buffer but is still big keeps it.
        assert_eq!(next_room(BUF_LARGE, BUF_LARGE / 2, BUF_LARGE), BUF_LARGE);
        // A KEEPALIVE: back to small.
        assert_eq!(next_room(BUF_LARGE, 19, BUF_LARGE), BUF_SMALL);
        assert_eq!(next_room(BUF_SMALL, 19, BUF_SMALL), BUF_SMALL);
    }
}

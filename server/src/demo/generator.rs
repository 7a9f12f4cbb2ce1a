//! The demo's traffic: rooms spread over the simulated homeservers, and a
//! few events per second (with typing notifications and to-device messages
//! now and then) handed to Herald through its intake API over HTTP, as a
//! homeserver would.

use std::net::SocketAddr;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};

use herald_store::now_ms;

/// A room and the servers in it.
#[derive(Debug, Clone)]
pub struct Room {
    pub room_id: String,
    pub servers: Vec<String>,
}

/// Twelve rooms of two to all of `servers` each; one room holds them all.
pub fn rooms(origin: &str, servers: &[String]) -> Vec<Room> {
    let mut rng = rand::thread_rng();
    let names = [
        "lobby",
        "rust",
        "matrix-dev",
        "music",
        "books",
        "ops",
        "random",
        "garden",
        "cycling",
        "cooking",
        "photos",
        "support",
    ];
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let servers = if i == 0 {
                servers.to_vec()
            } else {
                let n = rng.gen_range(2..=servers.len().max(2));
                servers
                    .choose_multiple(&mut rng, n.min(servers.len()))
                    .cloned()
                    .collect()
            };
            Room {
                room_id: format!("!{name}:{origin}"),
                servers,
            }
        })
        .collect()
}

/// Sends `per_second` events to random rooms until the runtime stops.
pub async fn run(
    admin: SocketAddr,
    token: String,
    origin: String,
    rooms: Vec<Room>,
    per_second: f64,
) {
    let pause = Duration::from_secs_f64(1.0 / per_second.max(0.1));
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(error = %e, "demo generator: no HTTP client");
            return;
        }
    };
    let mut n: u64 = 0;
    let mut warned = false;
    loop {
        tokio::time::sleep(pause).await;
        n += 1;
        let (path, body) = {
            let mut rng = rand::thread_rng();
            let Some(room) = rooms.choose(&mut rng) else {
                return;
            };
            next_request(&origin, room, n, &mut rng)
        };
        match post_json(&client, admin, &path, &token, &body).await {
            Ok((200, _)) => warned = false,
            Ok((status, answer)) if !warned => {
                tracing::warn!(status, answer = ?answer, "demo generator: intake refused");
                warned = true;
            }
            Err(e) if !warned => {
                tracing::warn!(error = %e, "demo generator: intake unreachable");
                warned = true;
            }
            _ => {}
        }
    }
}

/// The n-th request: mostly a message, every 5th a typing notification,
/// every 11th a to-device message to one server.
fn next_request(origin: &str, room: &Room, n: u64, rng: &mut impl Rng) -> (String, Value) {
    let users = ["alice", "bob", "carol", "dave"];
    let sender = format!("@{}:{origin}", users[rng.gen_range(0..users.len())]);
    if n.is_multiple_of(11) {
        let server = room.servers.choose(rng).cloned().unwrap_or_default();
        return (
            "/_herald/v1/send/edus".into(),
            json!({"edus": [{
                "edu_type": "m.direct_to_device",
                "content": {"sender": sender, "type": "m.room_key_request",
                            "message_id": format!("demo{n}"), "messages": {}},
                "destinations": [server],
            }]}),
        );
    }
    if n.is_multiple_of(5) {
        return (
            "/_herald/v1/send/edus".into(),
            json!({"edus": [{
                "edu_type": "m.typing",
                "content": {"room_id": room.room_id, "user_id": sender, "typing": true},
                "destinations": room.servers,
            }]}),
        );
    }
    let event_id = format!("$demo{n}-{:08x}", rng.gen::<u32>());
    (
        "/_herald/v1/send/pdus".into(),
        json!({"events": [{
            "event_id": event_id,
            "room_id": room.room_id,
            "pdu": {
                "event_id": event_id,
                "room_id": room.room_id,
                "sender": sender,
                "origin_server_ts": now_ms(),
                "type": "m.room.message",
                "content": {"msgtype": "m.text", "body": format!("demo message {n}")},
                "depth": n,
                "prev_events": [],
                "auth_events": [],
            },
            "destinations": room.servers,
        }]}),
    )
}

/// `POST http://<addr><path>` with a bearer token: status and body.
async fn post_json(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    token: &str,
    body: &Value,
) -> Result<(u16, String), String> {
    let response = client
        .post(format!("http://{addr}{path}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| e.to_string())?;
    Ok((status, text))
}

//! A DNS server on 127.0.0.1 (UDP, hickory-proto encoding) for the tests
//! that resolve server names: it answers the A/AAAA/SRV records a test adds
//! (loopback addresses only), NXDOMAIN for names it does not know, SERVFAIL
//! for as many queries about a name as the test asks, and counts queries.
//! (Each test file uses part of it.)
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use parking_lot::Mutex;
use tokio::net::UdpSocket;

#[derive(Default)]
struct ZoneData {
    records: HashMap<(String, RecordType), Vec<RData>>,
    /// SERVFAIL answers still to give, per name.
    fail: HashMap<String, usize>,
    /// Every query: (name, type).
    queries: Vec<(String, RecordType)>,
}

type Zone = Arc<Mutex<ZoneData>>;

pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Zone,
}

impl DnsServer {
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind DNS");
        let addr = socket.local_addr().expect("DNS address");
        let zone: Zone = Arc::default();
        let z = zone.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(request) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Ok(bytes) = answer(&z, &request).to_vec() else {
                    continue;
                };
                let _ = socket.send_to(&bytes, peer).await;
            }
        });
        Self { addr, zone }
    }

    fn add(&self, name: &str, rdata: RData) {
        let key = (name.to_ascii_lowercase(), rdata.record_type());
        self.zone.lock().records.entry(key).or_default().push(rdata);
    }

    /// An A or AAAA record; only loopback addresses, or loopback in the
    /// NAT64 well-known prefix (`64:ff9b::7f00:0/104`, for the IP filter's
    /// tests: nothing connects to it).
    pub fn a(&self, name: &str, ip: &str) {
        match ip.parse::<IpAddr>().expect("an IP address") {
            IpAddr::V4(v4) => {
                assert!(v4.is_loopback(), "tests use loopback only");
                self.add(name, RData::A(A(v4)))
            }
            IpAddr::V6(v6) => {
                let nat64_loopback =
                    v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && v6.octets()[12] == 127;
                assert!(
                    v6.is_loopback() || nat64_loopback,
                    "tests use loopback only"
                );
                self.add(name, RData::AAAA(AAAA(v6)))
            }
        }
    }

    /// An SRV record; target `.` means "no service".
    pub fn srv(&self, name: &str, priority: u16, weight: u16, port: u16, target: &str) {
        let target = if target == "." {
            Name::root()
        } else {
            Name::from_ascii(format!("{target}.")).expect("a DNS name")
        };
        self.add(name, RData::SRV(SRV::new(priority, weight, port, target)));
    }

    /// The next `n` queries about `name` get SERVFAIL.
    pub fn fail(&self, name: &str, n: usize) {
        self.zone.lock().fail.insert(name.to_owned(), n);
    }

    /// How many queries arrived in all.
    pub fn total_queries(&self) -> usize {
        self.zone.lock().queries.len()
    }

    /// How many queries about `name` arrived.
    pub fn queries(&self, name: &str) -> usize {
        let zone = self.zone.lock();
        zone.queries.iter().filter(|(n, _)| n == name).count()
    }
}

fn answer(zone: &Zone, request: &Message) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true);
    let mut zone = zone.lock();
    for query in request.queries() {
        response.add_query(query.clone());
        let name = query.name().to_ascii();
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        zone.queries.push((name.clone(), query.query_type()));
        if let Some(left) = zone.fail.get_mut(&name) {
            if *left > 0 {
                *left -= 1;
                response.set_response_code(ResponseCode::ServFail);
                continue;
            }
        }
        if !zone.records.keys().any(|(n, _)| *n == name) {
            response.set_response_code(ResponseCode::NXDomain);
            continue;
        }
        for rdata in zone
            .records
            .get(&(name, query.query_type()))
            .into_iter()
            .flatten()
        {
            response.add_answer(Record::from_rdata(query.name().clone(), 60, rdata.clone()));
        }
    }
    response
}

//! A tiny DNS server for tests: UDP on 127.0.0.1 with an ephemeral port, answering A and AAAA questions from a table
//! the test changes as it goes (with a short TTL), NXDOMAIN for a name it does not have, and nothing at all once
//! silenced (a resolver that stopped answering). Messages are read and written with hickory's protocol types, the
//! same ones `lb`'s resolver uses.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA};
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// The TTL of every answer, in seconds: short, so that `lb` asks again soon.
const DNS_TTL: u32 = 1;

#[derive(Default)]
struct Table {
    /// Lowercase names without the trailing dot, and their addresses.
    names: HashMap<String, Vec<IpAddr>>,
    silent: bool,
    /// Names it does not answer for (lowercase, without the trailing dot).
    silent_names: std::collections::HashSet<String>,
    questions: usize,
}

pub struct TestDns {
    addr: SocketAddr,
    table: Arc<Mutex<Table>>,
    task: JoinHandle<()>,
}

impl TestDns {
    pub async fn start() -> TestDns {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind the test DNS server");
        let addr = socket.local_addr().expect("the DNS server's address");
        let table = Arc::new(Mutex::new(Table::default()));
        let task = tokio::spawn(serve(socket, table.clone()));
        TestDns { addr, table, task }
    }

    /// What `resolver` is set to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `name` resolves to `addrs` from now on (none: NXDOMAIN).
    pub fn set(&self, name: &str, addrs: &[IpAddr]) {
        let mut table = self.table.lock().unwrap();
        match addrs.is_empty() {
            true => table.names.remove(name),
            false => table
                .names
                .insert(name.to_ascii_lowercase(), addrs.to_vec()),
        };
    }

    /// Stops answering (`true`) or answers again.
    pub fn silence(&self, silent: bool) {
        self.table.lock().unwrap().silent = silent;
    }

    /// Stops answering questions about `name` (`true`), or answers them again.
    pub fn silence_name(&self, name: &str, silent: bool) {
        let mut table = self.table.lock().unwrap();
        match silent {
            true => table.silent_names.insert(name.to_ascii_lowercase()),
            false => table.silent_names.remove(&name.to_ascii_lowercase()),
        };
    }

    /// Questions asked so far (answered or not).
    pub fn questions(&self) -> usize {
        self.table.lock().unwrap().questions
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: UdpSocket, table: Arc<Mutex<Table>>) {
    let mut buf = vec![0; 4096];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(question) = Message::from_vec(&buf[..len]) else {
            continue;
        };
        let Some(answer) = answer(&question, &table) else {
            continue;
        };
        if let Ok(bytes) = answer.to_vec() {
            let _ = socket.send_to(&bytes, peer).await;
        }
    }
}

/// The answer to `question`, or `None` when silenced.
fn answer(question: &Message, table: &Mutex<Table>) -> Option<Message> {
    let mut table = table.lock().unwrap();
    table.questions += 1;
    let about_silent = question.queries.iter().any(|query| {
        let name = query
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        table.silent_names.contains(&name)
    });
    if table.silent || about_silent {
        return None;
    }
    let mut answer = Message::response(question.metadata.id, question.metadata.op_code);
    answer.metadata.authoritative = true;
    answer.metadata.recursion_desired = question.metadata.recursion_desired;
    answer.queries = question.queries.clone();
    for query in &question.queries {
        let name = query
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let Some(addrs) = table.names.get(&name) else {
            answer.metadata.response_code = ResponseCode::NXDomain;
            continue;
        };
        for ip in addrs {
            let data = match (ip, query.query_type()) {
                (IpAddr::V4(ip), RecordType::A) => RData::A(A(*ip)),
                (IpAddr::V6(ip), RecordType::AAAA) => RData::AAAA(AAAA(*ip)),
                _ => continue,
            };
            answer
                .answers
                .push(Record::from_rdata(query.name().clone(), DNS_TTL, data));
        }
    }
    Some(answer)
}

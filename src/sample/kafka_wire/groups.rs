//! Group requests: `ListGroups` per broker, batched `FindCoordinator`, batched
//! `OffsetFetch` (v8+, many groups per request, sharded by coordinator) and batched
//! `DescribeGroups` / `ConsumerGroupDescribe`.
//!
//! Results use the sampler's types (`kafka_admin`'s listings, descriptions, committed
//! offsets) so the snapshot is built by the same pure code on both paths.
//!
//! Retries: a group whose coordinator moved (`NOT_COORDINATOR`,
//! `COORDINATOR_NOT_AVAILABLE`) is looked up again, one still loading
//! (`COORDINATOR_LOAD_IN_PROGRESS`) is asked again after a pause; at most
//! [`ATTEMPTS`] rounds, each bounded by the sample's deadline.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::client::Client;
use super::{codes, WireError};
use crate::sample::kafka_admin::{Committed, GroupDescription, GroupListing, GroupState, GroupType, Member, TopicPartition};

/// Rounds of coordinator look-up and retry per request kind.
pub const ATTEMPTS: usize = 3;
/// Groups per `OffsetFetch` request.
pub const OFFSET_FETCH_BATCH: usize = 200;
/// Groups per describe request.
pub const DESCRIBE_BATCH: usize = 100;
/// Keys per `FindCoordinator` request.
const FIND_BATCH: usize = 1000;
const LOADING_PAUSE: Duration = Duration::from_millis(100);

fn gid(g: &str) -> GroupId {
    GroupId(StrBytes::from_string(g.to_string()))
}

/// Kafka's state names; anything else (KIP-848 `Assigning`, `Reconciling`) is Unknown,
/// as librdkafka 2.12 reports it.
pub fn parse_state(s: &str) -> GroupState {
    match s {
        "Stable" => GroupState::Stable,
        "Empty" => GroupState::Empty,
        "PreparingRebalance" => GroupState::PreparingRebalance,
        "CompletingRebalance" => GroupState::CompletingRebalance,
        "Dead" => GroupState::Dead,
        _ => GroupState::Unknown,
    }
}

pub fn parse_type(s: &str) -> GroupType {
    match s.to_ascii_lowercase().as_str() {
        "classic" => GroupType::Classic,
        "consumer" => GroupType::Consumer,
        _ => GroupType::Unknown,
    }
}

/// Every group of every broker. Fails as a whole when any broker fails: a partial list
/// would read as groups gone.
pub async fn list_groups(client: &Client, deadline: Instant) -> Result<Vec<GroupListing>, WireError> {
    if client.broker_ids().is_empty() {
        client.metadata(Some(&[]), deadline).await?;
    }
    match list_once(client, deadline).await {
        // A broker that cannot be reached may have left the cluster: refresh the broker
        // list once and ask again.
        Err(WireError::Transport { .. } | WireError::UnknownBroker(_)) => {
            client.metadata(Some(&[]), deadline).await?;
            list_once(client, deadline).await
        }
        other => other,
    }
}

async fn list_once(client: &Client, deadline: Instant) -> Result<Vec<GroupListing>, WireError> {
    let req = ListGroupsRequest::default();
    let calls = client.broker_ids().into_iter().map(|b| {
        let req = &req;
        async move { client.call(b, req, 4, 5, deadline).await }
    });
    let mut out = Vec::new();
    for resp in futures_join(calls).await {
        let resp = resp?;
        if resp.error_code != codes::NONE {
            return Err(WireError::kafka("ListGroups", resp.error_code));
        }
        for g in resp.groups {
            // ListGroups before v5 has no type: only classic groups existed then.
            let kind = if g.group_type.is_empty() { GroupType::Classic } else { parse_type(g.group_type.as_str()) };
            out.push(GroupListing { group_id: g.group_id.0.to_string(), state: parse_state(g.group_state.as_str()), kind, simple: g.protocol_type.is_empty() });
        }
    }
    Ok(out)
}

/// Runs futures concurrently and returns their outputs in order.
pub async fn futures_join<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Coordinators of `groups` (cache first, then batched look-ups). A group whose
/// look-up failed maps to its error.
pub async fn coordinators(client: &Client, groups: &[&str], deadline: Instant) -> HashMap<String, Result<i32, WireError>> {
    let mut out = HashMap::with_capacity(groups.len());
    let mut unknown = Vec::new();
    for g in groups {
        match client.coordinator(g) {
            Some(n) => {
                out.insert(g.to_string(), Ok(n));
            }
            None => unknown.push(*g),
        }
    }
    let calls = unknown.chunks(FIND_BATCH).map(|chunk| async move {
        let mut req = FindCoordinatorRequest::default();
        req.key_type = 0;
        req.coordinator_keys = chunk.iter().map(|g| StrBytes::from_string(g.to_string())).collect();
        (chunk, client.call_any(&req, 4, 6, deadline).await)
    });
    for (chunk, resp) in futures_join(calls).await {
        match resp {
            Err(e) => {
                for g in chunk {
                    out.insert(g.to_string(), Err(e.clone()));
                }
            }
            Ok(resp) => {
                for c in resp.coordinators {
                    let g = c.key.to_string();
                    if c.error_code == codes::NONE {
                        client.learn_broker(c.node_id.0, c.host.as_str(), c.port);
                        client.set_coordinator(&g, c.node_id.0);
                        out.insert(g, Ok(c.node_id.0));
                    } else {
                        out.insert(g, Err(WireError::kafka("FindCoordinator", c.error_code)));
                    }
                }
                for g in chunk {
                    out.entry(g.to_string()).or_insert_with(|| Err(WireError::Protocol { op: "FindCoordinator", message: "group missing from the answer".into() }));
                }
            }
        }
    }
    out
}

/// What one round of a per-coordinator request did for one group.
enum Outcome<T> {
    Done(Result<T, WireError>),
    /// Coordinator moved: look up again.
    Moved(WireError),
    /// Coordinator loading: ask again after a pause.
    Loading(WireError),
}

fn classify<T>(op: &'static str, code: i16, ok: impl FnOnce() -> T) -> Outcome<T> {
    if code == codes::NONE {
        Outcome::Done(Ok(ok()))
    } else if codes::coordinator_moved(code) {
        Outcome::Moved(WireError::kafka(op, code))
    } else if codes::coordinator_loading(code) {
        Outcome::Loading(WireError::kafka(op, code))
    } else {
        Outcome::Done(Err(WireError::kafka(op, code)))
    }
}

/// Runs a batched per-coordinator request for `groups` with look-up and retry rounds.
/// `send` sends one batch to one coordinator and returns an outcome per group.
async fn per_coordinator<T, F, Fut>(client: &Client, groups: &[&str], batch: usize, deadline: Instant, send: F) -> HashMap<String, Result<T, WireError>>
where
    F: Fn(i32, Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<(String, Outcome<T>)>, WireError>>,
{
    let mut done: HashMap<String, Result<T, WireError>> = HashMap::with_capacity(groups.len());
    let mut todo: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    for attempt in 0..ATTEMPTS {
        if todo.is_empty() {
            break;
        }
        let names: Vec<&str> = todo.iter().map(String::as_str).collect();
        let coords = coordinators(client, &names, deadline).await;
        let mut by_node: BTreeMap<i32, Vec<String>> = BTreeMap::new();
        for g in &todo {
            match coords.get(g) {
                Some(Ok(n)) => by_node.entry(*n).or_default().push(g.clone()),
                Some(Err(e)) => {
                    done.insert(g.clone(), Err(e.clone()));
                }
                None => {
                    done.insert(g.clone(), Err(WireError::Protocol { op: "FindCoordinator", message: "no coordinator".into() }));
                }
            }
        }
        let mut calls = Vec::new();
        for (node, gs) in by_node {
            for chunk in gs.chunks(batch) {
                let chunk = chunk.to_vec();
                let send = &send;
                calls.push(async move { (chunk.clone(), send(node, chunk).await) });
            }
        }
        let mut again = Vec::new();
        let mut loading = false;
        let last = attempt + 1 == ATTEMPTS;
        for (chunk, r) in futures_join(calls).await {
            match r {
                Err(e) => {
                    // The coordinator itself failed: look it up again next round.
                    for g in chunk {
                        client.forget_coordinator(&g);
                        if last {
                            done.insert(g, Err(e.clone()));
                        } else {
                            again.push(g);
                        }
                    }
                }
                Ok(outcomes) => {
                    let mut seen = std::collections::HashSet::new();
                    for (g, o) in outcomes {
                        seen.insert(g.clone());
                        match o {
                            Outcome::Done(r) => {
                                done.insert(g, r);
                            }
                            Outcome::Moved(e) | Outcome::Loading(e) if last => {
                                done.insert(g, Err(e));
                            }
                            Outcome::Moved(_) => {
                                client.forget_coordinator(&g);
                                again.push(g);
                            }
                            Outcome::Loading(_) => {
                                loading = true;
                                again.push(g);
                            }
                        }
                    }
                    for g in chunk.into_iter().filter(|g| !seen.contains(g)) {
                        done.insert(g, Err(WireError::Protocol { op: "group request", message: "group missing from the answer".into() }));
                    }
                }
            }
        }
        if loading && Instant::now() + LOADING_PAUSE < deadline {
            tokio::time::sleep(LOADING_PAUSE).await;
        }
        todo = again;
    }
    done
}

/// Committed offsets of every partition of each group, many groups per request.
pub async fn offset_fetch(client: &Client, groups: &[&str], deadline: Instant) -> HashMap<String, Result<Vec<Committed>, WireError>> {
    per_coordinator(client, groups, OFFSET_FETCH_BATCH, deadline, |node, chunk| async move {
        let mut req = OffsetFetchRequest::default();
        req.groups = chunk
            .iter()
            .map(|g| {
                let mut r = OffsetFetchRequestGroup::default();
                r.group_id = gid(g);
                r.topics = None;
                r
            })
            .collect();
        let resp = client.call(node, &req, 8, 9, deadline).await?;
        if resp.error_code != codes::NONE {
            return Err(WireError::kafka("OffsetFetch", resp.error_code));
        }
        Ok(resp
            .groups
            .into_iter()
            .map(|g| {
                let name = g.group_id.0.to_string();
                let topics = g.topics;
                let o = classify("OffsetFetch", g.error_code, || {
                    let mut list: Vec<Committed> = Vec::new();
                    for t in topics {
                        for p in t.partitions {
                            // -1 is "no commit"; a partition-level error is no usable commit either.
                            let ok = p.error_code == codes::NONE && p.committed_offset >= 0;
                            list.push((TopicPartition { topic: t.name.0.to_string(), partition: p.partition_index }, ok.then_some(p.committed_offset)));
                        }
                    }
                    list
                });
                (name, o)
            })
            .collect())
    })
    .await
}

/// Describes groups: classic ones with `DescribeGroups`, KIP-848 ones with
/// `ConsumerGroupDescribe`, batched per coordinator.
pub async fn describe(client: &Client, groups: &[(&str, GroupType)], deadline: Instant) -> Vec<GroupDescription> {
    let classic: Vec<&str> = groups.iter().filter(|(_, k)| *k != GroupType::Consumer).map(|(g, _)| *g).collect();
    let consumer: Vec<&str> = groups.iter().filter(|(_, k)| *k == GroupType::Consumer).map(|(g, _)| *g).collect();
    let a = per_coordinator(client, &classic, DESCRIBE_BATCH, deadline, |node, chunk| async move {
        let mut req = DescribeGroupsRequest::default();
        req.groups = chunk.iter().map(|g| gid(g)).collect();
        let resp = client.call(node, &req, 0, 5, deadline).await?;
        Ok(resp.groups.into_iter().map(|d| (d.group_id.0.to_string(), classify("DescribeGroups", d.error_code, || classic_description(d)))).collect())
    });
    let b = per_coordinator(client, &consumer, DESCRIBE_BATCH, deadline, |node, chunk| async move {
        let mut req = ConsumerGroupDescribeRequest::default();
        req.group_ids = chunk.iter().map(|g| gid(g)).collect();
        let resp = client.call(node, &req, 0, 1, deadline).await?;
        Ok(resp.groups.into_iter().map(|d| (d.group_id.0.to_string(), classify("ConsumerGroupDescribe", d.error_code, || consumer_description(d)))).collect())
    });
    let (a, b) = tokio::join!(a, b);
    let mut out = Vec::with_capacity(groups.len());
    for (g, r) in a.into_iter().chain(b) {
        match r {
            Ok(d) => out.push(d),
            Err(e) => out.push(GroupDescription {
                group_id: g,
                state: GroupState::Unknown,
                kind: GroupType::Unknown,
                members: Vec::new(),
                error: Some(super::to_admin(e)),
            }),
        }
    }
    out
}

/// A classic group's description; member assignments are decoded from the consumer
/// protocol bytes (other protocols, such as Connect's, carry no partitions).
fn classic_description(d: describe_groups_response::DescribedGroup) -> GroupDescription {
    let consumer = d.protocol_type.as_str() == "consumer" || d.protocol_type.is_empty();
    let members = d
        .members
        .into_iter()
        .map(|m| Member {
            client_id: m.client_id.to_string(),
            consumer_id: m.member_id.to_string(),
            host: m.client_host.to_string(),
            assignment: if consumer { decode_assignment(m.member_assignment) } else { Vec::new() },
        })
        .collect();
    GroupDescription { group_id: d.group_id.0.to_string(), state: parse_state(d.group_state.as_str()), kind: GroupType::Classic, members, error: None }
}

fn consumer_description(d: consumer_group_describe_response::DescribedGroup) -> GroupDescription {
    let members = d
        .members
        .into_iter()
        .map(|m| Member {
            client_id: m.client_id.to_string(),
            consumer_id: m.member_id.to_string(),
            host: m.client_host.to_string(),
            assignment: m
                .assignment
                .topic_partitions
                .into_iter()
                .flat_map(|t| {
                    let topic = t.topic_name.0.to_string();
                    t.partitions.into_iter().map(move |p| TopicPartition { topic: topic.clone(), partition: p })
                })
                .collect(),
        })
        .collect();
    GroupDescription { group_id: d.group_id.0.to_string(), state: parse_state(d.group_state.as_str()), kind: GroupType::Consumer, members, error: None }
}

/// Decodes a consumer-protocol assignment (version, then the body); empty on bytes that
/// do not parse (a member mid-join has none yet).
pub fn decode_assignment(mut bytes: Bytes) -> Vec<TopicPartition> {
    if bytes.len() < 2 {
        return Vec::new();
    }
    let version = bytes::Buf::get_i16(&mut bytes).clamp(0, 3);
    match ConsumerProtocolAssignment::decode(&mut bytes, version) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .flat_map(|t| {
                let topic = t.topic.0.to_string();
                t.partitions.into_iter().map(move |p| TopicPartition { topic: topic.clone(), partition: p })
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn states_and_types_map_like_librdkafka_and_unknown_stays_unknown() {
        assert_eq!(parse_state("Stable"), GroupState::Stable);
        assert_eq!(parse_state("Empty"), GroupState::Empty);
        assert_eq!(parse_state("Reconciling"), GroupState::Unknown);
        assert_eq!(parse_type("consumer"), GroupType::Consumer);
        assert_eq!(parse_type("share"), GroupType::Unknown);
    }

    #[test]
    fn a_consumer_protocol_assignment_decodes_to_partitions_and_garbage_to_none() {
        let mut t = consumer_protocol_assignment::TopicPartition::default();
        t.topic = TopicName(StrBytes::from_static_str("orders"));
        t.partitions = vec![0, 2];
        let mut a = ConsumerProtocolAssignment::default();
        a.assigned_partitions = vec![t];
        let mut buf = bytes::BytesMut::new();
        bytes::BufMut::put_i16(&mut buf, 1);
        a.encode(&mut buf, 1).unwrap();
        let got = decode_assignment(buf.freeze());
        assert_eq!(got, vec![TopicPartition { topic: "orders".into(), partition: 0 }, TopicPartition { topic: "orders".into(), partition: 2 }]);
        assert!(decode_assignment(Bytes::from_static(&[0, 1, 0xff, 0xff, 0xff])).is_empty());
        assert!(decode_assignment(Bytes::new()).is_empty());
    }
}

//! What each node runs with: PostgreSQL and Redis specs, the configuration files
//! of web servers and workers, and which Redis and shards they are given. The load
//! balancers' configuration is [`crate::lb`]'s.

use nodes::{PostgresSpec, RedisSpec};
use topology::{Node, Role, Topology};

use crate::error::ControlError;
use crate::files::{config_path, log_path, node_dir, write_private};
use crate::shared::{PG_USER, Shared, primary_urls_with};

/// The PostgreSQL spec of node `node`.
pub(crate) fn pg_spec(shared: &Shared, node: &Node) -> PostgresSpec {
    let dir = node_dir(&shared.opts.run_dir, &node.name);
    let mut spec =
        PostgresSpec::new(&dir, node.addr.ip(), node.addr.port(), PG_USER, &shared.secrets.postgres);
    spec.log_file = log_path(&shared.opts.run_dir, &node.name);
    spec.durability = shared.opts.durability;
    spec
}

/// The spec `node` runs with now: a standby of `follow`, or a primary when
/// `follow` is `None`; with its shard's synchronous standbys once they are
/// active (a standby ignores them until it is promoted, and then needs them at once).
pub(crate) fn pg_run_spec(shared: &Shared, node: &Node, follow: Option<&Node>) -> PostgresSpec {
    let mut spec = pg_spec(shared, node);
    if let Some(member) = node.shard {
        let topology = shared.topology();
        let shard = &topology.shards()[member.shard.0 as usize];
        let state = shared.cluster.snapshot();
        let lost: Vec<&str> = state.lost_dcs.iter().map(String::as_str).collect();
        if state.shards[member.shard.0 as usize].sync_active
            && let Some(quorum) = shard.quorum(&node.name, &lost)
        {
            spec.extra_conf.push(("synchronous_standby_names".into(), quorum.setting()));
        }
    }
    if let Some(primary) = follow {
        let source = pg_spec_from(shared, primary, &node.dc);
        spec.extra_conf.extend(nodes::standby_conf(&source, &node.name, &slot_name(node)));
    }
    spec
}

/// `node`'s spec as a node of `from_dc` reaches it — through `from_dc`'s WAN
/// gateway when `node` is in another DC: to connect (stream, copy, rewind from
/// it), not to start it.
pub(crate) fn pg_spec_from(shared: &Shared, node: &Node, from_dc: &str) -> PostgresSpec {
    let mut spec = pg_spec(shared, node);
    let addr = shared.topology().address_from(from_dc, node);
    (spec.listen, spec.port) = (addr.ip(), addr.port());
    spec
}

/// The replication slot a replica streams through, on whichever member is primary.
pub(crate) fn slot_name(node: &Node) -> String {
    node.name.replace('-', "_")
}

/// The Redis spec of node `node`.
pub(crate) fn redis_spec(shared: &Shared, node: &Node) -> RedisSpec {
    redis_spec_at(shared, node, node.addr)
}

/// `node`'s Redis spec as reached at `addr` (a WAN relay to it): to connect, not to start.
fn redis_spec_at(shared: &Shared, node: &Node, addr: std::net::SocketAddr) -> RedisSpec {
    let dir = node_dir(&shared.opts.run_dir, &node.name);
    let mut spec = RedisSpec::new(&dir, addr.ip(), addr.port(), &shared.secrets.redis);
    spec.log_file = log_path(&shared.opts.run_dir, &node.name);
    // Nothing is kept across a restart: what it held may have been invalidated
    // while it was down (a returning Redis serves nothing stale). Sessions are
    // the shards' (ADR 0009); a lost read-your-writes floor costs a replica read
    // at most the lag bound behind.
    spec.persistent = false;
    // The DC's memory budget: what Redis holds may all be evicted safely (ADR 0013).
    if let Some(dc) = shared.topology().dc(&node.dc) {
        spec.maxmemory_mb = dc.redis_memory.maxmemory_mb;
        spec.eviction = dc.redis_memory.eviction.as_redis();
    }
    spec
}

/// Connection URL of each published shard's initial primary, in shard order, as
/// a node of `dc` reaches it (through its WAN gateway if the primary is
/// elsewhere): the credentials and database a process uses; it routes by the
/// published map (which a shard still joining is not in).
pub(crate) fn initial_urls(shared: &Shared, dc: &str) -> Vec<String> {
    let published = shared.cluster.snapshot().published();
    primary_urls_with(&shared.topology(), None, published, &shared.secrets.postgres, Some(dc))
}

/// Connection URL of each shard's current primary, in shard order (those still
/// joining included).
pub(crate) fn shard_urls(shared: &Shared) -> Vec<String> {
    let state = shared.cluster.snapshot();
    primary_urls_with(&shared.topology(), Some(&state), state.shards.len(), &shared.secrets.postgres, None)
}

/// The Redis node a node of `dc` uses: its DC's first, else the first anywhere.
pub(crate) fn redis_node_for<'t>(t: &'t Topology, dc: &str) -> &'t Node {
    t.nodes_of(Role::Redis)
        .find(|n| n.dc == dc)
        .or_else(|| t.nodes_of(Role::Redis).next())
        .expect("a validated topology with web servers or workers has a Redis")
}

/// The Redis nodes the other DCs use, each once and never `dc`'s own: a node of
/// `dc` writes invalidations and timelines to them too (ADR 0008).
pub(crate) fn redis_peer_nodes<'t>(t: &'t Topology, dc: &str) -> Vec<&'t Node> {
    let own = redis_node_for(t, dc);
    let mut peers: Vec<&Node> = Vec::new();
    for other in t.dcs().iter().filter(|d| d.name != dc) {
        let node = redis_node_for(t, &other.name);
        if node.name != own.name && !peers.iter().any(|p| p.name == node.name) {
            peers.push(node);
        }
    }
    peers
}

/// The URL of the Redis a node of `dc` uses.
fn redis_for(shared: &Shared, dc: &str) -> String {
    redis_spec(shared, redis_node_for(&shared.topology(), dc)).url()
}

/// The URLs (with their passwords) of the other DCs' Redis servers, as a node of
/// `dc` reaches them: through its WAN gateway.
fn redis_peers_for(shared: &Shared, dc: &str) -> Vec<String> {
    let t = shared.topology();
    redis_peer_nodes(&t, dc)
        .into_iter()
        .map(|n| redis_spec_at(shared, n, t.address_from(dc, n)).url())
        .collect()
}

/// Write the configuration of web server or worker `node`; returns its path.
pub(crate) fn write_process_config(shared: &Shared, node: &Node) -> Result<std::path::PathBuf, ControlError> {
    let run_dir = &shared.opts.run_dir;
    let store = run_dir.join("objects");
    let mut text = format!(
        "listen = \"{addr}\"\n\n[database]\nshards = {shards:?}\ncluster_url = \"http://{api}/api/cluster?dc={dc}\"\n\n\
         [redis]\nurl = \"{redis}\"\npeers = {peers:?}\n\n[media]\nstore_dir = {store:?}\n",
        addr = node.addr,
        api = shared.api_addr,
        dc = node.dc,
        shards = initial_urls(shared, &node.dc),
        redis = redis_for(shared, &node.dc),
        peers = redis_peers_for(shared, &node.dc),
        store = store.display().to_string(),
    );
    if node.role == Role::Worker {
        // Still in `[media]`: removed photos are purged from every CDN edge, through
        // this controller, with the run directory's admin token.
        if shared.topology().nodes_of(Role::Cdn).next().is_some() {
            text.push_str(&format!(
                "cdn_purge_url = \"http://{api}/api/cdn/purge\"\ncdn_purge_token = {token:?}\n",
                api = shared.api_addr,
                token = shared.secrets.admin,
            ));
        }
        text.push_str(&format!("\n[worker]\nid = \"{}\"\n", node.name));
    }
    if node.role == Role::Web {
        // Served to browsers only through the load balancers' HTTPS.
        text.push_str("\n[sessions]\nsecure_cookies = true\n");
        // Their X-Forwarded-For names the client the abuse limits count.
        let lbs: Vec<String> = shared
            .topology()
            .nodes_in(&node.dc)
            .filter(|n| n.role == Role::LoadBalancer)
            .map(|n| n.addr.ip().to_string())
            .collect();
        text.push_str(&format!("\n[http]\ntrusted_proxies = {lbs:?}\n"));
        // `millions bench` sends the run directory's admin token past the
        // per-address limits: every user it makes comes from one address.
        text.push_str(&format!("\n[abuse]\nbypass_token = {:?}\n", shared.secrets.admin));
        // Photo URLs point at the healthy CDN edges (the web server probes them).
        text.push_str(&crate::cdn::web_section(&shared.topology(), &node.dc));
    }
    let path = config_path(run_dir, &node.name);
    write_private(&path, &text)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dc_writes_to_the_other_dcs_redis_servers() {
        let names = |nodes: Vec<&Node>| nodes.into_iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        let two = topology::preset("default").unwrap();
        assert_eq!(redis_node_for(&two, "dc1").name, "dc1-redis-1");
        assert_eq!(names(redis_peer_nodes(&two, "dc1")), ["dc2-redis-1"]);
        assert_eq!(names(redis_peer_nodes(&two, "dc2")), ["dc1-redis-1"]);
        let one = topology::preset("single").unwrap();
        assert!(redis_peer_nodes(&one, "dc1").is_empty(), "one DC: no peers");
    }
}

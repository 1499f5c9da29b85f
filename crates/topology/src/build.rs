//! From the file as written to a validated [`Topology`]: every check, each with a
//! message naming the place (`dc[1] (dc2): …`, `shard 0: …`, `ports.web …`).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use sharding::{BUCKETS, ShardId};

use crate::raw::{RawDc, RawDns, RawPorts, RawRegion, RawRole, RawScaled, RawTls, RawTopology, RawWan};
use crate::{
    Cidr, Dc, DnsSettings, LbSettings, MAX_CERT_LIFETIME_SECS, MIN_CERT_LIFETIME_SECS, MIN_REDIS_MB, Node,
    Ports, RedisMemory, Region, Replication, Role, Scale, Shard, ShardMember, Survives, TlsSettings,
    Topology, WanSettings, default_check,
};

/// Most nodes of one role one DC may have; far more than one machine can run, and a
/// bound on what a typo (`count = 10000000`) can make us allocate.
const MAX_COUNT: i64 = 1000;
/// Longest DC or topology name: names are parts of node names, paths and
/// PostgreSQL `application_name`s (at most 63 bytes).
const MAX_NAME: usize = 32;

/// A DC's nodes as far as the DC section alone decides them.
struct DcPlan {
    /// How the DC is described in messages: `dc[1] (dc2)`.
    place: String,
    /// The DC as the topology will hold it.
    dc: Dc,
    /// Addresses of the lb, web, worker, redis, dns and cdn nodes, in that order.
    addrs: [Vec<IpAddr>; 6],
    /// `postgres.first`, as an offset in the range, if set.
    postgres_first: Option<u128>,
}

/// The roles a DC section lists (PostgreSQL nodes come from the shards).
const DC_ROLES: [Role; 6] = [Role::LoadBalancer, Role::Web, Role::Worker, Role::Redis, Role::Dns, Role::Cdn];

/// The roles that scale within a range (`min`, `max`).
const SCALED_ROLES: [Role; 2] = [Role::Web, Role::Worker];

pub(crate) fn build(raw: RawTopology) -> Result<Topology, String> {
    check_name(&raw.name).map_err(|m| format!("name \"{}\" {m}", raw.name))?;
    let ports = ports(&raw.ports)?;

    if raw.dc.is_empty() {
        return Err("no data centers: add at least one [[dc]]".into());
    }
    let mut plans: Vec<DcPlan> = Vec::new();
    for (i, raw_dc) in raw.dc.iter().enumerate() {
        let plan = plan_dc(i, raw_dc, &plans)?;
        plans.push(plan);
    }
    for (i, a) in plans.iter().enumerate() {
        for b in &plans[i + 1..] {
            if a.dc.cidr.overlaps(&b.dc.cidr) {
                return Err(format!(
                    "{} and {} have overlapping ranges {} and {}; every DC needs a range of its own",
                    a.place, b.place, a.dc.cidr, b.dc.cidr
                ));
            }
        }
    }
    for plan in &plans {
        check_roles(plan)?;
    }
    let has = |role: Role| plans.iter().any(|p| !p.addrs[role_index(role)].is_empty());
    if !has(Role::Web) {
        return Err("no DC has web servers: at least one needs web.count of 1 or more".into());
    }
    if !has(Role::Worker) {
        return Err(
            "no DC has workers: at least one needs worker.count of 1 or more (workers process photo posts)"
                .into(),
        );
    }

    let shards = shards(&raw, &plans)?;
    let postgres = postgres_addrs(&shards, &plans)?;

    let mut nodes = Vec::new();
    for (shard, member_addrs) in shards.iter().zip(&postgres) {
        let dcs = std::iter::once(&shard.primary_dc).chain(&shard.replica_dcs);
        for (k, ((name, dc), ip)) in shard.members.iter().zip(dcs).zip(member_addrs).enumerate() {
            nodes.push(Node {
                name: name.clone(),
                role: Role::Postgres,
                dc: dc.clone(),
                addr: SocketAddr::new(*ip, ports.postgres),
                shard: Some(ShardMember { shard: shard.id, initial_primary: k == 0 }),
            });
        }
    }
    for role in [Role::Redis, Role::Worker, Role::Web, Role::LoadBalancer, Role::Cdn, Role::Dns] {
        for plan in &plans {
            for (k, ip) in plan.addrs[role_index(role)].iter().enumerate() {
                nodes.push(Node {
                    name: format!("{}-{}-{}", plan.dc.name, role.key(), k + 1),
                    role,
                    dc: plan.dc.name.clone(),
                    addr: SocketAddr::new(*ip, ports.of(role)),
                    shard: None,
                });
            }
        }
    }

    let wan = raw.wan.as_ref().map(wan).transpose()?;
    if wan.is_some() && plans.len() > 1 {
        // One gateway per DC, started first: the others' cross-DC connections go
        // through it.
        let mut gateways = Vec::new();
        for plan in &plans {
            let ip = consecutive(&plan.place, &plan.dc.cidr, Role::Wan, None, 1)?[0];
            gateways.push(Node {
                name: format!("{}-wan-1", plan.dc.name),
                role: Role::Wan,
                dc: plan.dc.name.clone(),
                addr: SocketAddr::new(ip, ports.wan),
                shard: None,
            });
        }
        nodes.splice(0..0, gateways);
        if nodes.len() > usize::from(u16::MAX - crate::WAN_LINK_PORTS) {
            return Err(format!("{} nodes are too many for the WAN gateways' relay ports", nodes.len()));
        }
    }

    let mut by_ip: HashMap<IpAddr, &str> = HashMap::new();
    let mut names: HashSet<&str> = HashSet::new();
    for node in &nodes {
        if let Some(other) = by_ip.insert(node.addr.ip(), &node.name) {
            return Err(format!(
                "address {} is used by both {other} and {}; every node needs an address of its own",
                node.addr.ip(),
                node.name
            ));
        }
        if !names.insert(&node.name) {
            return Err(format!("two nodes are named {}", node.name));
        }
    }
    check_spares(&plans, &by_ip)?;

    let dns = dns(&raw.dns)?;
    let tls = tls(&raw.tls)?;
    let regions = regions(&raw.region, &plans)?;
    Ok(Topology {
        name: raw.name,
        dcs: plans.into_iter().map(|p| p.dc).collect(),
        shards,
        ports,
        nodes,
        dns,
        regions,
        wan,
        tls,
    })
}

/// The spare addresses of the scaled roles (those of the nodes between `count` and
/// `max`) are reserved for the nodes the controller may add: no node may have one.
/// (Two roles' spare addresses cannot overlap unless one's nodes have the other's
/// spare addresses: each role's addresses are consecutive, its nodes' first.)
fn check_spares(plans: &[DcPlan], by_ip: &HashMap<IpAddr, &str>) -> Result<(), String> {
    for plan in plans {
        for role in SCALED_ROLES {
            let scale = plan.dc.scale(role).expect("a scaled role");
            let running = plan.addrs[role_index(role)].len();
            for (k, ip) in scale.addrs.iter().enumerate().skip(running) {
                if let Some(other) = by_ip.get(ip) {
                    return Err(format!(
                        "address {ip} is reserved for {}-{key}-{} ({key}.max = {}) and used by {other}; a \
                         scaled role's addresses up to its max are kept for the nodes it may scale to",
                        plan.dc.name,
                        k + 1,
                        scale.max,
                        key = role.key(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `[tls]`: a lifetime between [`MIN_CERT_LIFETIME_SECS`] and
/// [`MAX_CERT_LIFETIME_SECS`]; a renewal window shorter than it; checks more
/// often than the window (else a certificate could expire between two checks).
/// What is left out takes its default for what is given.
fn tls(raw: &RawTls) -> Result<TlsSettings, String> {
    let (min, max) = (MIN_CERT_LIFETIME_SECS as i64, MAX_CERT_LIFETIME_SECS as i64);
    let lifetime = match raw.cert_lifetime_secs {
        None => TlsSettings::default().cert_lifetime_secs,
        Some(l) if (min..=max).contains(&l) => l as u64,
        Some(l) => {
            return Err(format!("tls.cert_lifetime_secs = {l} must be between {min} and {max} (ten years)"));
        }
    };
    let mut settings = TlsSettings::with_lifetime(lifetime);
    if let Some(r) = raw.renew_before_secs {
        if r < 2 || r as u64 >= lifetime {
            return Err(format!(
                "tls.renew_before_secs = {r} must be at least 2 and less than the certificate's lifetime \
                 (tls.cert_lifetime_secs = {lifetime})"
            ));
        }
        settings.renew_before_secs = r as u64;
        settings.renew_check_secs = default_check(r as u64);
    }
    if let Some(c) = raw.renew_check_secs {
        if c < 1 || c as u64 >= settings.renew_before_secs {
            return Err(format!(
                "tls.renew_check_secs = {c} must be at least 1 and less than the renewal window \
                 (tls.renew_before_secs = {}), or a certificate could expire between two checks",
                settings.renew_before_secs
            ));
        }
        settings.renew_check_secs = c as u64;
    }
    Ok(settings)
}

/// Whether `label` is one DNS label we accept: 1 to 63 lowercase letters, digits and
/// '-', not starting or ending with '-'.
fn dns_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn dns(raw: &RawDns) -> Result<DnsSettings, String> {
    let defaults = DnsSettings::default();
    let zone = raw.zone.clone().unwrap_or(defaults.zone);
    if zone.len() > 200 || zone.split('.').count() < 2 || !zone.split('.').all(dns_label) {
        return Err(format!(
            "dns.zone = \"{zone}\" is not a zone name: two or more labels of lowercase letters, digits and '-' \
             separated by dots, no final dot (e.g. \"millions.test\")"
        ));
    }
    let app = raw.app.clone().unwrap_or(defaults.app);
    if !dns_label(&app) {
        return Err(format!(
            "dns.app = \"{app}\" is not one DNS label (1 to 63 lowercase letters, digits and '-', e.g. \"www\")"
        ));
    }
    let ttl_secs = match raw.ttl_secs {
        None => defaults.ttl_secs,
        Some(t) if (1..=3600).contains(&t) => t as u32,
        Some(t) => return Err(format!("dns.ttl_secs = {t} must be between 1 and 3600")),
    };
    Ok(DnsSettings { zone, app, ttl_secs })
}

fn regions(raw: &[RawRegion], plans: &[DcPlan]) -> Result<Vec<Region>, String> {
    let dcs: Vec<&str> = plans.iter().map(|p| p.dc.name.as_str()).collect();
    let mut out: Vec<Region> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let place = format!("region[{i}] ({})", r.name);
        check_name(&r.name).map_err(|m| format!("region[{i}]: name \"{}\" {m}", r.name))?;
        if out.iter().any(|o| o.name == r.name) {
            return Err(format!("{place}: the name is already used; region names must be unique"));
        }
        if r.cidrs.is_empty() {
            return Err(format!("{place}: cidrs must list at least one address range"));
        }
        let mut cidrs = Vec::new();
        for (j, text) in r.cidrs.iter().enumerate() {
            let cidr: Cidr = text.parse().map_err(|e| format!("{place}: cidrs[{j}]: {e}"))?;
            if let Some(p) = plans.iter().find(|p| p.dc.cidr.overlaps(&cidr)) {
                return Err(format!(
                    "{place}: cidrs[{j}] = {cidr} overlaps {}'s range {}: clients and nodes need ranges of their own",
                    p.place, p.dc.cidr
                ));
            }
            if let Some(o) = out.iter().find(|o| o.cidrs.iter().any(|c| c.overlaps(&cidr))) {
                return Err(format!(
                    "{place}: cidrs[{j}] = {cidr} overlaps a range of region {}: a client is in one region",
                    o.name
                ));
            }
            if cidrs.iter().any(|c: &Cidr| c.overlaps(&cidr)) {
                return Err(format!("{place}: cidrs[{j}] = {cidr} overlaps another range of the region"));
            }
            cidrs.push(cidr);
        }
        if r.prefer.is_empty() {
            return Err(format!("{place}: prefer must list at least one DC, nearest first"));
        }
        for (j, dc) in r.prefer.iter().enumerate() {
            if !dcs.contains(&dc.as_str()) {
                return Err(format!(
                    "{place}: prefer[{j}] \"{dc}\" is not defined (the DCs are {})",
                    dcs.join(", ")
                ));
            }
            if r.prefer[..j].contains(dc) {
                return Err(format!("{place}: prefer lists \"{dc}\" twice"));
            }
        }
        out.push(Region { name: r.name.clone(), cidrs, prefer: r.prefer.clone() });
    }
    Ok(out)
}

/// Longest one-way delay a link may add, milliseconds.
const MAX_WAN_DELAY_MS: i64 = 10_000;

fn wan(raw: &RawWan) -> Result<WanSettings, String> {
    let ms = |what: &str, v: Option<i64>, default: u32| -> Result<u32, String> {
        match v {
            None => Ok(default),
            Some(v) if (0..=MAX_WAN_DELAY_MS).contains(&v) => Ok(v as u32),
            Some(v) => Err(format!("wan.{what} = {v} must be between 0 and {MAX_WAN_DELAY_MS}")),
        }
    };
    let delay_ms = ms("delay_ms", raw.delay_ms, 0)?;
    let jitter_ms = ms("jitter_ms", raw.jitter_ms, 0)?;
    if jitter_ms > delay_ms {
        return Err(format!(
            "wan.jitter_ms = {jitter_ms} must be at most wan.delay_ms = {delay_ms} (a delay cannot go below zero)"
        ));
    }
    let loss = raw.loss.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&loss) {
        return Err(format!("wan.loss = {loss} must be a probability between 0 and 1"));
    }
    let loss_penalty_ms = ms("loss_penalty_ms", raw.loss_penalty_ms, 200)?;
    Ok(WanSettings { delay_ms, jitter_ms, loss, loss_penalty_ms })
}

fn role_index(role: Role) -> usize {
    DC_ROLES.iter().position(|r| *r == role).expect("a role listed in DC sections")
}

/// Why `name` is not a usable DC or topology name, if it is not.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be 1 to {MAX_NAME} lowercase letters, digits and '-', starting with a letter and \
             not ending with '-' (it becomes part of node names)"
        ))
    }
}

fn ports(raw: &RawPorts) -> Result<Ports, String> {
    let port = |role: Role, value: Option<i64>| -> Result<u16, String> {
        match value {
            None => Ok(role.default_port()),
            Some(p) => u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("ports.{} = {p}: a port must be between 1 and 65535", role.key())),
        }
    };
    // A role whose admin listener takes the port after its own.
    let with_admin = |role: Role, value: Option<i64>, who: &str| -> Result<u16, String> {
        let p = port(role, value)?;
        if p == u16::MAX {
            let key = role.key();
            return Err(format!(
                "ports.{key} = {p}: {who}'s admin listener takes the next port, so ports.{key} must be below {p}"
            ));
        }
        Ok(p)
    };
    let lb = with_admin(Role::LoadBalancer, raw.lb, "a load balancer")?;
    let dns = with_admin(Role::Dns, raw.dns, "a DNS server")?;
    let https = match raw.https {
        None => crate::DEFAULT_HTTPS_PORT,
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("ports.https = {p}: a port must be between 1 and 65535"))?,
    };
    // The HTTPS listener shares its IP with a load balancer's or an edge's
    // public and admin listeners.
    let apart_from_https = |p: u16, role: Role, who: &str| -> Result<(), String> {
        if https == p || https == p + 1 {
            return Err(format!(
                "ports.https = {https}: {who} listens on ports.{} ({p}) and its admin listener on the next \
                 port; the HTTPS port must be another",
                role.key()
            ));
        }
        Ok(())
    };
    apart_from_https(lb, Role::LoadBalancer, "a load balancer")?;
    let cdn = with_admin(Role::Cdn, raw.cdn, "a CDN edge")?;
    apart_from_https(cdn, Role::Cdn, "a CDN edge")?;
    Ok(Ports {
        lb,
        https,
        web: port(Role::Web, raw.web)?,
        worker: port(Role::Worker, raw.worker)?,
        redis: port(Role::Redis, raw.redis)?,
        postgres: port(Role::Postgres, raw.postgres)?,
        dns,
        wan: port(Role::Wan, raw.wan)?,
        cdn,
    })
}

fn plan_dc(i: usize, raw: &RawDc, earlier: &[DcPlan]) -> Result<DcPlan, String> {
    if let Err(m) = check_name(&raw.name) {
        return Err(format!("dc[{i}]: name \"{}\" {m}", raw.name));
    }
    let place = format!("dc[{i}] ({})", raw.name);
    if raw.name.strip_prefix("shard").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "{place}: the name \"{}\" is reserved: PostgreSQL nodes are named shardN-pg-M",
            raw.name
        ));
    }
    if let Some(other) = earlier.iter().find(|p| p.dc.name == raw.name) {
        return Err(format!(
            "{place}: the name \"{}\" is already used by {}; DC names must be unique",
            raw.name, other.place
        ));
    }
    let cidr: Cidr = raw.cidr.parse().map_err(|e| format!("{place}: cidr: {e}"))?;

    let lb = raw.lb.as_ref().map(|lb| lb.role());
    let redis = raw.redis.as_ref().map(|r| r.role());
    let mut addrs: [Vec<IpAddr>; 6] = Default::default();
    let (mut web, mut worker) = (Scale::default(), Scale::default());
    for (role, out) in DC_ROLES.into_iter().zip(&mut addrs) {
        let section = match role {
            Role::LoadBalancer => lb.as_ref(),
            Role::Web => {
                (*out, web) = scaled(&place, &cidr, role, raw.web.as_ref())?;
                continue;
            }
            Role::Worker => {
                (*out, worker) = scaled(&place, &cidr, role, raw.worker.as_ref())?;
                continue;
            }
            Role::Redis => redis.as_ref(),
            Role::Dns => raw.dns.as_ref(),
            Role::Cdn => raw.cdn.as_ref(),
            Role::Postgres | Role::Wan => None,
        };
        if let Some(section) = section {
            *out = role_addrs(&place, &cidr, role, section)?;
        }
    }
    let postgres_first = match raw.postgres.as_ref().and_then(|p| p.first.as_deref()) {
        Some(text) => Some(address_in(&place, &cidr, "postgres.first", text)?.1),
        None => None,
    };
    let lb_algorithm = raw.lb.as_ref().and_then(|lb| lb.algorithm).unwrap_or_default();
    let lb_settings = LbSettings(raw.lb.as_ref().map(|lb| lb.settings()).unwrap_or_default());
    let redis_memory = redis_memory(&place, raw.redis.as_ref())?;
    Ok(DcPlan {
        place,
        dc: Dc { name: raw.name.clone(), cidr, lb_algorithm, lb_settings, redis_memory, web, worker },
        addrs,
        postgres_first,
    })
}

/// A scaled role's running nodes' addresses and its range, from its section (none:
/// no node, and [`Scale::default`]). Without `min` and `max` the range is the count;
/// with them, `count` starts within it (`min` when absent) and the addresses of all
/// `max` nodes, consecutive from `first` or the role's block, must fit.
fn scaled(
    place: &str,
    cidr: &Cidr,
    role: Role,
    raw: Option<&RawScaled>,
) -> Result<(Vec<IpAddr>, Scale), String> {
    let Some(raw) = raw else { return Ok((Vec::new(), Scale::default())) };
    let key = role.key();
    let (min, max) = match (raw.min, raw.max) {
        (None, None) => {
            if raw.autoscale.is_some() {
                return Err(format!(
                    "{place}: {key}.autoscale needs {key}.min and {key}.max: only a role with a range autoscales"
                ));
            }
            let addrs = role_addrs(place, cidr, role, &raw.role())?;
            let n = addrs.len() as u32;
            let scale =
                Scale { min: n, max: n, auto: false, addrs: addrs.clone(), autoscale: toml::Table::new() };
            return Ok((addrs, scale));
        }
        (Some(min), Some(max)) => (min, max),
        _ => {
            return Err(format!(
                "{place}: {key}.min and {key}.max go together: give both for a scaling range, or neither"
            ));
        }
    };
    if raw.addrs.is_some() {
        return Err(format!(
            "{place}: a scaled role's addresses are consecutive: give {key}.first, not {key}.addrs"
        ));
    }
    if min < 1 {
        return Err(format!("{place}: {key}.min = {min}: a scaled role keeps at least one node"));
    }
    if min > max {
        return Err(format!("{place}: {key}.min = {min} is above {key}.max = {max}"));
    }
    if max > MAX_COUNT {
        return Err(format!("{place}: {key}.max = {max} must be at most {MAX_COUNT}"));
    }
    let count = raw.count.unwrap_or(min);
    if !(min..=max).contains(&count) {
        return Err(format!("{place}: {key}.count = {count} is outside {key}.min..{key}.max = {min}..{max}"));
    }
    let autoscale = raw.autoscale.clone().unwrap_or_default();
    for (name, value) in &autoscale {
        finite(place, &format!("{key}.autoscale.{name}"), value)?;
    }
    let first = match &raw.first {
        Some(text) => Some(address_in(place, cidr, &format!("{key}.first"), text)?.1),
        None => None,
    };
    let all = consecutive_because(place, cidr, role, first, max as u128, &format!(" ({key}.max)"))?;
    let running = all[..count as usize].to_vec();
    Ok((running, Scale { min: min as u32, max: max as u32, auto: true, addrs: all, autoscale }))
}

/// Refuse a NaN or infinite float anywhere in `value` (the value of `what`): what
/// the controller reads must be numbers, and a NaN would not equal itself.
fn finite(place: &str, what: &str, value: &toml::Value) -> Result<(), String> {
    match value {
        toml::Value::Float(f) if !f.is_finite() => {
            Err(format!("{place}: {what} = {f} is not a finite number"))
        }
        toml::Value::Array(items) => {
            items.iter().enumerate().try_for_each(|(j, v)| finite(place, &format!("{what}[{j}]"), v))
        }
        toml::Value::Table(table) => {
            table.iter().try_for_each(|(name, v)| finite(place, &format!("{what}.{name}"), v))
        }
        _ => Ok(()),
    }
}

/// A DC's Redis memory bound from its `[dc.redis]` section.
fn redis_memory(place: &str, raw: Option<&crate::raw::RawRedis>) -> Result<RedisMemory, String> {
    let Some(raw) = raw else { return Ok(RedisMemory::default()) };
    let maxmemory_mb = match raw.maxmemory_mb {
        None => None,
        Some(mb) if mb < i64::from(MIN_REDIS_MB) || mb > i64::from(u32::MAX) => {
            return Err(format!(
                "{place}: redis.maxmemory_mb = {mb} is out of range: give at least {MIN_REDIS_MB} (MiB per Redis \
                 server), or leave it out for no bound"
            ));
        }
        Some(mb) => Some(mb as u32),
    };
    if raw.eviction.is_some() && maxmemory_mb.is_none() {
        return Err(format!(
            "{place}: redis.eviction is given without redis.maxmemory_mb: nothing is evicted without a budget"
        ));
    }
    Ok(RedisMemory { maxmemory_mb, eviction: raw.eviction.unwrap_or_default() })
}

/// Parse `text` (the value of `what`) as an address of `cidr` a node may use; returns
/// it and its offset in the range.
fn address_in(place: &str, cidr: &Cidr, what: &str, text: &str) -> Result<(IpAddr, u128), String> {
    let ip: IpAddr =
        text.parse().map_err(|_| format!("{place}: {what} = \"{text}\" is not an IPv4 or IPv6 address"))?;
    let offset = cidr
        .offset_of(ip)
        .ok_or_else(|| format!("{place}: {what} = {ip} is outside the DC's range {cidr}"))?;
    if !cidr.usable_offsets().contains(&offset) {
        return Err(format!(
            "{place}: {what} = {ip} is the network or broadcast address of {cidr}; no node may use it"
        ));
    }
    Ok((ip, offset))
}

/// The addresses of one role's nodes in one DC.
fn role_addrs(place: &str, cidr: &Cidr, role: Role, raw: &RawRole) -> Result<Vec<IpAddr>, String> {
    let key = role.key();
    if let Some(count) = raw.count.filter(|c| !(0..=MAX_COUNT).contains(c)) {
        return Err(format!("{place}: {key}.count = {count} must be between 0 and {MAX_COUNT}"));
    }
    if let Some(list) = &raw.addrs {
        if raw.first.is_some() {
            return Err(format!("{place}: {key}.first and {key}.addrs cannot both be set"));
        }
        if let Some(count) = raw.count.filter(|c| *c as usize != list.len()) {
            return Err(format!(
                "{place}: {key}.count = {count} but {key}.addrs lists {} addresses",
                list.len()
            ));
        }
        if list.len() as i64 > MAX_COUNT {
            return Err(format!("{place}: {key}.addrs lists more than {MAX_COUNT} addresses"));
        }
        return list
            .iter()
            .enumerate()
            .map(|(j, text)| address_in(place, cidr, &format!("{key}.addrs[{j}]"), text).map(|(ip, _)| ip))
            .collect();
    }
    let count = raw.count.ok_or_else(|| format!("{place}: [{key}] needs a count (or a list of addrs)"))?;
    let first = match &raw.first {
        Some(text) => Some(address_in(place, cidr, &format!("{key}.first"), text)?.1),
        None => None,
    };
    consecutive(place, cidr, role, first, count as u128)
}

/// `count` consecutive addresses from offset `first` (or the role's default block),
/// all usable; refused with a message saying which range is too small.
fn consecutive(
    place: &str,
    cidr: &Cidr,
    role: Role,
    first: Option<u128>,
    count: u128,
) -> Result<Vec<IpAddr>, String> {
    consecutive_because(place, cidr, role, first, count, "")
}

/// As [`consecutive`], the messages saying after the count why that many
/// (`because`: ` (web.max)`, or empty).
fn consecutive_because(
    place: &str,
    cidr: &Cidr,
    role: Role,
    first: Option<u128>,
    count: u128,
    because: &str,
) -> Result<Vec<IpAddr>, String> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let key = role.key();
    let (default_start, default_block) = role.default_block();
    let start = first.unwrap_or(default_start);
    let usable = cidr.usable_offsets();
    let end = start.checked_add(count - 1).filter(|end| end <= usable.end());
    let Some(end) = end else {
        let from = cidr.host(start).map_or_else(|| format!("offset {start}"), |ip| ip.to_string());
        let last = cidr.host(*usable.end()).expect("usable offsets are in the range");
        return Err(format!(
            "{place}: the range {cidr} is too small for its nodes: {key} needs {count} address{}{because} from {from}, \
             but the range's last usable address is {last}; use a larger range{}",
            if count == 1 { "" } else { "es" },
            if first.is_none() { format!(" or set {key}.first") } else { String::new() }
        ));
    };
    if let Some(block) = default_block.filter(|block| first.is_none() && count > *block) {
        let (a, b) = (cidr.host(start), cidr.host(start + block - 1));
        let (a, b) = (a.expect("checked above"), b.expect("checked above"));
        return Err(format!(
            "{place}: {count} {key} nodes{because} do not fit {key}'s default block {a}-{b} ({block} addresses); \
             set {key}.first to place them elsewhere in the range"
        ));
    }
    Ok((start..=end).map(|o| cidr.host(o).expect("checked above")).collect())
}

/// A DC with web servers needs a load balancer (its only entry) and Redis (their
/// sessions and caches); a load balancer needs web servers; workers need Redis.
fn check_roles(plan: &DcPlan) -> Result<(), String> {
    let n = |role: Role| plan.addrs[role_index(role)].len();
    let place = &plan.place;
    if n(Role::LoadBalancer) > 0 && n(Role::Web) == 0 {
        return Err(format!(
            "{place}: web.count must be at least 1: the DC has a load balancer, which needs web servers"
        ));
    }
    if n(Role::Web) > 0 && n(Role::LoadBalancer) == 0 {
        return Err(format!(
            "{place}: lb.count must be at least 1: the DC has web servers, and a load balancer is a DC's only entry"
        ));
    }
    if n(Role::Web) > 0 && n(Role::Redis) == 0 {
        return Err(format!(
            "{place}: redis.count must be at least 1: the DC has web servers, which keep sessions and caches in \
             their DC's Redis"
        ));
    }
    if n(Role::Cdn) > 0 && n(Role::Web) == 0 {
        return Err(format!(
            "{place}: web.count must be at least 1: the DC has CDN edges, whose origin is the DC's web servers"
        ));
    }
    if n(Role::Worker) > 0 && n(Role::Redis) == 0 {
        return Err(format!(
            "{place}: redis.count must be at least 1: the DC has workers, which fan posts out to Redis timelines"
        ));
    }
    Ok(())
}

fn shards(raw: &RawTopology, plans: &[DcPlan]) -> Result<Vec<Shard>, String> {
    if raw.shard.is_empty() {
        return Err("no shards: add at least one [[shard]]".into());
    }
    if raw.shard.len() > usize::from(BUCKETS) {
        return Err(format!("{} shards is more than the {BUCKETS} buckets", raw.shard.len()));
    }
    let names: Vec<&str> = plans.iter().map(|p| p.dc.name.as_str()).collect();
    let defined = |what: String, dc: &str| -> Result<String, String> {
        if names.contains(&dc) {
            Ok(dc.to_owned())
        } else {
            Err(format!("{what} \"{dc}\" is not defined (the DCs are {})", names.join(", ")))
        }
    };
    let mut shards = Vec::new();
    for (i, s) in raw.shard.iter().enumerate() {
        let primary_dc = defined(format!("shard {i}: primary DC"), &s.primary)?;
        let replica_dcs = s
            .replicas
            .iter()
            .map(|dc| defined(format!("shard {i}: replica DC"), dc))
            .collect::<Result<Vec<_>, _>>()?;
        let replication = match (s.replication, s.survives) {
            (Some(Replication::Async), Some(survives)) => {
                return Err(format!(
                    "shard {i}: survives = \"{survives}\" needs replication = \"sync\" (an asynchronous \
                     shard's last acknowledged writes may be lost with its primary)"
                ));
            }
            (Some(r), _) => r,
            (None, Some(_)) => Replication::Sync,
            (None, None) => Replication::Async,
        };
        let survives = s.survives.unwrap_or_default();
        if replication == Replication::Sync && replica_dcs.is_empty() {
            return Err(format!(
                "shard {i}: replication = \"sync\" needs at least one replica (commits wait for one)"
            ));
        }
        if survives == Survives::Dc && replica_dcs.iter().all(|dc| *dc == primary_dc) {
            return Err(format!(
                "shard {i}: survives = \"dc\" needs a replica in another DC than the primary's \
                 ({primary_dc}): a commit must be confirmed outside the DC that could be lost"
            ));
        }
        let members = (1..=1 + replica_dcs.len()).map(|k| format!("shard{i}-pg-{k}")).collect();
        shards.push(Shard { id: ShardId(i as u16), replication, survives, primary_dc, replica_dcs, members });
    }
    Ok(shards)
}

/// Each shard member's address: in each DC, the PostgreSQL nodes placed there (shard
/// by shard, the primary before the replicas) take consecutive addresses from
/// `postgres.first`.
fn postgres_addrs(shards: &[Shard], plans: &[DcPlan]) -> Result<Vec<Vec<IpAddr>>, String> {
    let mut per_dc: Vec<Vec<IpAddr>> = Vec::new();
    for plan in plans {
        let here = shards
            .iter()
            .flat_map(|s| std::iter::once(&s.primary_dc).chain(&s.replica_dcs))
            .filter(|dc| **dc == plan.dc.name)
            .count();
        per_dc.push(consecutive(
            &plan.place,
            &plan.dc.cidr,
            Role::Postgres,
            plan.postgres_first,
            here as u128,
        )?);
    }
    let mut next = vec![0usize; plans.len()];
    let mut out = Vec::new();
    for shard in shards {
        let mut addrs = Vec::new();
        for dc in std::iter::once(&shard.primary_dc).chain(&shard.replica_dcs) {
            let d = plans.iter().position(|p| p.dc.name == *dc).expect("checked by shards()");
            addrs.push(per_dc[d][next[d]]);
            next[d] += 1;
        }
        out.push(addrs);
    }
    Ok(out)
}

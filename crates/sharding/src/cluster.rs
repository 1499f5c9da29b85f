//! Where each shard's PostgreSQL servers are, at one epoch: what `millions
//! control` publishes and what web servers and workers route by.

use serde::{Deserialize, Serialize};

/// The servers of every shard, as the controller last decided them.
///
/// The controller raises `epoch` each time a shard's primary or replica set
/// changes (a failover, a replica lost or rebuilt). A process that holds a map
/// ignores any map whose epoch is not larger than its own, so a late answer
/// can never route writes back to a demoted primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterMap {
    /// Version of this map; larger is newer.
    pub epoch: u64,
    /// One entry per shard, in shard order.
    pub shards: Vec<ShardServers>,
    /// Which shard owns each bucket, as runs of buckets (`ShardMap::ranges`);
    /// absent while no bucket has moved (the even split over `shards`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<Vec<crate::BucketRange>>,
}

/// One shard's servers. Addresses are `host:port`; credentials and the
/// database name come from each process's own configuration, so the map
/// carries no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardServers {
    /// The one server that takes writes, or `None` while a failover is in
    /// progress (writes then fail fast as unavailable).
    pub primary: Option<String>,
    /// Streaming replicas believed healthy, usable for reads.
    pub replicas: Vec<String>,
    /// How many of `replicas`, from the first, are in the reader's own data
    /// center (a map made for one DC lists them first): reads prefer them. `None`:
    /// no preference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near: Option<usize>,
}

impl ClusterMap {
    /// Whether `other` should replace `self`.
    pub fn is_superseded_by(&self, other: &ClusterMap) -> bool {
        other.epoch > self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_epochs_win_and_unknown_fields_are_refused() {
        let a = ClusterMap { epoch: 3, shards: vec![], directory: None };
        let b = ClusterMap { epoch: 4, shards: vec![], directory: None };
        assert!(a.is_superseded_by(&b));
        assert!(!b.is_superseded_by(&a));
        assert!(!a.is_superseded_by(&a.clone()));
        let json = r#"{"epoch":1,"shards":[{"primary":"127.0.0.1:5432","replicas":[],"x":1}]}"#;
        assert!(serde_json::from_str::<ClusterMap>(json).is_err());
        let json = r#"{"epoch":1,"shards":[{"primary":null,"replicas":["127.0.0.2:5432"]}]}"#;
        let map: ClusterMap = serde_json::from_str(json).unwrap();
        assert_eq!(map.shards[0].primary, None);
        assert_eq!(map.shards[0].near, None, "a map without a DC's view prefers none");
    }
}

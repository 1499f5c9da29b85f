//! Property-based fuzzing of the ids and maps that route data (docs/SECURITY.md):
//! post ids built from their parts give the parts back and sort by time; any
//! number is a post id or refused; any bucket assignment is a shard map that
//! routes every bucket to a shard it has, or refused; any JSON is a cluster map
//! or refused. Never a panic. Each runs `PROPTEST_CASES` cases (256 by default;
//! `make fuzz` runs many more).

use proptest::prelude::*;
use settings::fuzz::config;
use sharding::{BUCKETS, Bucket, ClusterMap, PostId, ShardId, ShardMap, user_bucket};

/// When post ids start: the time of an id made at 0 ms.
fn id_epoch_ms() -> u64 {
    PostId::from_parts(0, Bucket::new(0).unwrap(), 0).unix_ms()
}

proptest! {
    #![proptest_config(config(1.0))]

    #[test]
    fn a_post_id_gives_back_its_parts_and_sorts_by_time(
        ms in 0u64..(1 << 41),
        later in 1u64..1_000_000,
        bucket in 0u16..BUCKETS,
        other in 0u16..BUCKETS,
        seq in 0u16..1024,
        seq2 in any::<u16>(),
    ) {
        let b = Bucket::new(bucket).unwrap();
        let id = PostId::from_parts(ms, b, seq);
        prop_assert!(id.get() >= 0);
        prop_assert_eq!(id.bucket(), b);
        prop_assert_eq!(id.unix_ms(), id_epoch_ms() + ms);
        if ms + later < (1 << 41) {
            let next = PostId::from_parts(ms + later, Bucket::new(other).unwrap(), seq2);
            prop_assert!(id < next, "a later id sorts after, whatever its bucket and sequence");
        }
    }

    #[test]
    fn any_number_is_a_post_id_or_refused(raw in any::<i64>()) {
        match PostId::from_i64(raw) {
            Ok(id) => {
                prop_assert!(raw > 0);
                prop_assert_eq!(id.get(), raw);
                prop_assert!(id.bucket().get() < BUCKETS);
                let rebuilt = PostId::from_parts(id.unix_ms() - id_epoch_ms(), id.bucket(), (raw & 1023) as u16);
                prop_assert_eq!(rebuilt, id);
            }
            Err(e) => {
                prop_assert!(raw <= 0);
                prop_assert!(!e.to_string().is_empty());
            }
        }
        prop_assert!(user_bucket(raw).get() < BUCKETS);
        prop_assert_eq!(Bucket::new(raw as u16).is_some(), (raw as u16) < BUCKETS);
    }

    #[test]
    fn any_assignment_is_a_shard_map_or_refused(
        epoch in any::<u64>(),
        shards in 0usize..10,
        assignment in prop_oneof![
            prop::collection::vec(0u16..12, BUCKETS as usize),
            prop::collection::vec(0u16..12, 0..(BUCKETS as usize + 2)),
        ],
    ) {
        match ShardMap::from_assignment(epoch, shards, assignment.iter().map(|&s| ShardId(s)).collect()) {
            Ok(map) => {
                prop_assert_eq!((map.epoch(), map.shard_count()), (epoch, shards));
                for b in 0..BUCKETS {
                    let shard = map.shard_of_bucket(Bucket::new(b).unwrap());
                    prop_assert_eq!(shard.0, assignment[b as usize]);
                    prop_assert!((shard.0 as usize) < shards);
                }
            }
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                let fits = shards > 0
                    && assignment.len() == BUCKETS as usize
                    && assignment.iter().all(|&s| (s as usize) < shards);
                prop_assert!(!fits, "refused a valid assignment: {}", e);
            }
        }
    }

    #[test]
    fn any_json_is_a_cluster_map_or_refused(text in prop_oneof![
        any::<String>(),
        (
            any::<u64>(),
            prop::collection::vec(
                (
                    prop::option::of("[0-9.:]{0,20}"),
                    prop::collection::vec("[ -~]{0,12}", 0..3),
                    prop::option::of(any::<i64>()),
                ),
                0..4,
            ),
        )
            .prop_map(|(epoch, shards)| {
                let shards: Vec<String> = shards
                    .into_iter()
                    .map(|(primary, replicas, near)| {
                        let near = near.map(|n| format!(",\"near\":{n}")).unwrap_or_default();
                        let (p, r) = (serde_json::json!(primary), serde_json::json!(replicas));
                        format!("{{\"primary\":{p},\"replicas\":{r}{near}}}")
                    })
                    .collect();
                format!("{{\"epoch\":{epoch},\"shards\":[{}]}}", shards.join(","))
            }),
    ]) {
        if let Ok(map) = serde_json::from_str::<ClusterMap>(&text) {
            let again: ClusterMap = serde_json::from_str(&serde_json::to_string(&map).unwrap()).unwrap();
            prop_assert_eq!(again, map);
        }
    }
}

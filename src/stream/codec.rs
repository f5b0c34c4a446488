//! Bytes that must not change between releases: the stable hash that places a key in its output
//! partition, and the envelope of operator state in the checkpoint.
//!
//! Both go through bincode 2 (standard configuration) over serde, which encodes a value the same
//! way on every platform and Rust version. The hash is 64-bit FNV-1a over those bytes; it is
//! pinned by a test, because changing it would move keys to other output partitions under a
//! running pipeline.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::hash::Fnv1a;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The stable hash of `value`: FNV-1a over its bincode encoding. Values bincode cannot encode
/// (sequences of unknown length) hash what was encoded before the failure, which is still
/// deterministic.
pub(crate) fn stable_hash<T: Serialize + ?Sized>(value: &T) -> u64 {
    let mut hash = Fnv1a::new();
    let _ = bincode::serde::encode_into_std_write(value, &mut hash, config());
    hash.finish()
}

/// A seed for randomness that is a pure function of its inputs (invariant 3).
pub(crate) fn seed<T: Serialize + ?Sized>(value: &T) -> u64 {
    stable_hash(value)
}

/// The output partition of `key` among `partitions`.
pub(crate) fn partition_of<K: Serialize + ?Sized>(key: &K, partitions: u32) -> u32 {
    let n = u64::from(partitions.max(1));
    u32::try_from(stable_hash(key) % n).unwrap_or(0)
}

/// The header of every operator's state: the Rust types it was written with. A state type that
/// changed without a new schema version is caught here instead of being mis-decoded.
#[derive(Debug, serde::Deserialize, Serialize)]
struct Envelope {
    types: Vec<String>,
}

/// Encodes `payload` after an envelope naming `types`.
pub(crate) fn encode_state<P: Serialize>(types: &[&str], payload: &P) -> Result<Vec<u8>, String> {
    let envelope = Envelope {
        types: types.iter().map(|t| (*t).to_owned()).collect(),
    };
    let mut bytes = bincode::serde::encode_to_vec(&envelope, config())
        .map_err(|e| format!("cannot encode the state header: {e}"))?;
    let payload = bincode::serde::encode_to_vec(payload, config()).map_err(|e| {
        format!("bincode cannot encode the state ({e}); state types must be plain serde data (no #[serde(flatten)], no sequences of unknown length)")
    })?;
    bytes.extend(payload);
    Ok(bytes)
}

/// Decodes state written by [`encode_state`], refusing state written for other types.
pub(crate) fn decode_state<P: DeserializeOwned>(types: &[&str], bytes: &[u8]) -> Result<P, String> {
    let (envelope, used): (Envelope, usize) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| format!("the state header cannot be read ({e})"))?;
    if envelope.types != types {
        return Err(format!(
            "the checkpoint holds state of types [{}] but the program now uses [{}]. A changed state type needs a new schema version (with_schema_version) and fresh state (`weir checkpoint reset --keep-offsets`), or the old type back",
            envelope.types.join(", "),
            types.join(", ")
        ));
    }
    let rest = bytes.get(used..).unwrap_or_default();
    let (payload, read): (P, usize) = bincode::serde::decode_from_slice(rest, config())
        .map_err(|e| format!("the state of types [{}] cannot be decoded ({e}); did its fields change without a new schema version (with_schema_version)?", types.join(", ")))?;
    if read != rest.len() {
        return Err(format!(
            "the state of types [{}] has {} bytes left over after decoding; did its fields change without a new schema version (with_schema_version)?",
            types.join(", "),
            rest.len() - read
        ));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_pinned() {
        // A change here moves keys between output partitions of running pipelines.
        // FNV-1a over bincode's varint length 5 and the bytes of "hello".
        assert_eq!(stable_hash("hello"), 0x2e6a_85a8_b0eb_8fb8);
        assert_eq!(
            stable_hash(&("a".to_owned(), 1_u32)),
            stable_hash(&("a", 1_u32))
        );
        assert!(partition_of("hello", 4) < 4);
    }

    #[test]
    fn state_round_trips_and_a_changed_type_is_named() {
        let bytes = encode_state(&["u64"], &vec![1_u64, 2]).unwrap();
        assert_eq!(
            decode_state::<Vec<u64>>(&["u64"], &bytes).unwrap(),
            vec![1, 2]
        );
        let e = decode_state::<Vec<String>>(&["String"], &bytes).unwrap_err();
        assert!(e.contains("types [u64]") && e.contains("[String]"), "{e}");
        let e = decode_state::<u8>(&["u64"], &bytes).unwrap_err();
        assert!(e.contains("left over"), "{e}");
    }
}

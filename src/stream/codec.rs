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

/// What precedes every operator's state since the envelope stopped naming Rust types; an
/// older envelope starts with the number of type names it held (1 or 2), never with this.
const STATE_MAGIC: [u8; 4] = *b"WST2";

/// The header of every operator's state: the kind of operator that wrote it (e.g. `window`), so
/// that state stored under an id another kind of operator now has is refused instead of
/// mis-decoded. The state's schema is identified by what the program declares, the operator's
/// id and schema version (in the snapshot and in the pipeline identity), never by Rust type
/// names, which change with a module move or a compiler release.
#[derive(Debug, serde::Deserialize, Serialize)]
struct Envelope {
    kind: String,
}

/// The envelope written before the state carried [`STATE_MAGIC`]: the Rust type names of the
/// state, which are no longer compared (a renamed type must still resume).
#[derive(Debug, serde::Deserialize)]
struct LegacyEnvelope {
    types: Vec<String>,
}

/// What an older weir wrote in place of a state it could not encode.
const LEGACY_PLACEHOLDER: &str = "state that could not be encoded";

/// Encodes `payload`, the state of an operator of `kind`, after its envelope.
pub(crate) fn encode_state<P: Serialize>(kind: &str, payload: &P) -> Result<Vec<u8>, String> {
    let envelope = Envelope {
        kind: kind.to_owned(),
    };
    let mut bytes = STATE_MAGIC.to_vec();
    bincode::serde::encode_into_std_write(&envelope, &mut bytes, config())
        .map_err(|e| format!("cannot encode the state header: {e}"))?;
    bincode::serde::encode_into_std_write(payload, &mut bytes, config()).map_err(|e| {
        format!("bincode cannot encode the state ({e}); state types must be plain serde data (no #[serde(flatten)], no sequences of unknown length, no Serialize impl that fails)")
    })?;
    Ok(bytes)
}

/// Decodes the state of an operator of `kind` written by [`encode_state`] (or by an older weir),
/// refusing state another kind of operator wrote.
pub(crate) fn decode_state<P: DeserializeOwned>(kind: &str, bytes: &[u8]) -> Result<P, String> {
    let rest = match bytes.strip_prefix(&STATE_MAGIC) {
        Some(rest) => {
            let (envelope, used): (Envelope, usize) =
                bincode::serde::decode_from_slice(rest, config())
                    .map_err(|e| format!("the state header cannot be read ({e})"))?;
            if envelope.kind != kind {
                return Err(format!(
                    "the checkpoint holds the state of a {} operator under this id, and the program now gives the id to a {kind} operator. Give each operator its own id (with_state_id), or start fresh state (`weir checkpoint reset --keep-offsets`)",
                    envelope.kind
                ));
            }
            rest.get(used..).unwrap_or_default()
        }
        None => {
            let (legacy, used): (LegacyEnvelope, usize) =
                bincode::serde::decode_from_slice(bytes, config())
                    .map_err(|e| format!("the state header cannot be read ({e})"))?;
            if let Some(placeholder) = legacy
                .types
                .iter()
                .find(|t| t.starts_with(LEGACY_PLACEHOLDER))
            {
                return Err(format!(
                    "the snapshot holds no state: an older weir wrote it in place of {placeholder}. Remove this snapshot so that recovery uses an older one, or start fresh state (`weir checkpoint reset --keep-offsets`)"
                ));
            }
            bytes.get(used..).unwrap_or_default()
        }
    };
    let changed = "did the state type change without a new schema version (with_schema_version)? Go back to the old type, or raise the version and start fresh state (`weir checkpoint reset --keep-offsets`)";
    // The Rust type is named for people only: nothing stored depends on it.
    let (payload, read): (P, usize) =
        bincode::serde::decode_from_slice(rest, config()).map_err(|e| {
            format!(
                "the state cannot be decoded as {} ({e}); {changed}",
                std::any::type_name::<P>()
            )
        })?;
    if read != rest.len() {
        return Err(format!(
            "the state decoded as {} has {} bytes left over; {changed}",
            std::any::type_name::<P>(),
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
    fn state_round_trips_and_another_kind_or_shape_is_refused() {
        let bytes = encode_state("window", &vec![1_u64, 2]).unwrap();
        assert_eq!(
            decode_state::<Vec<u64>>("window", &bytes).unwrap(),
            vec![1, 2]
        );
        let e = decode_state::<Vec<u64>>("update_state_by_key", &bytes).unwrap_err();
        assert!(
            e.contains("state of a window operator") && e.contains("update_state_by_key"),
            "{e}"
        );
        let e = decode_state::<u8>("window", &bytes).unwrap_err();
        assert!(
            e.contains("left over") && e.contains("with_schema_version"),
            "{e}"
        );
        let e = decode_state::<Vec<String>>("window", &bytes).unwrap_err();
        assert!(
            e.contains("cannot be decoded as alloc::vec::Vec<alloc::string::String>"),
            "{e}"
        );
    }

    #[test]
    fn state_written_before_the_kind_envelope_is_read_whatever_its_type_names() {
        // The envelope of earlier releases: bincode of the Rust type names, then the state.
        let legacy = |types: &[&str]| {
            let types: Vec<String> = types.iter().map(|t| (*t).to_owned()).collect();
            let mut bytes = bincode::serde::encode_to_vec(&types, config()).unwrap();
            bytes.extend(bincode::serde::encode_to_vec(vec![7_u64], config()).unwrap());
            bytes
        };
        let bytes = legacy(&["alloc::string::String", "my_app::old_module::Total"]);
        assert_eq!(decode_state::<Vec<u64>>("window", &bytes).unwrap(), vec![7]);
        let bytes = legacy(&["state that could not be encoded: boom"]);
        let e = decode_state::<Vec<u64>>("window", &bytes).unwrap_err();
        assert!(e.contains("holds no state") && e.contains("boom"), "{e}");
    }
}

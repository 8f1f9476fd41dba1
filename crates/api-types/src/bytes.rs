//! Raw bytes in JSON as standard base64, so step output survives byte-exact (non-UTF-8,
//! no trailing newline) through the API.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes serialized as a base64 string.
#[derive(Clone, Default, PartialEq, Eq, utoipa::ToSchema)]
#[schema(value_type = String, format = Byte)]
pub struct Bytes64(pub Vec<u8>);

impl std::fmt::Debug for Bytes64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes64({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s.as_bytes()).map(Bytes64).map_err(serde::de::Error::custom)
    }
}

//! Secrets on the server: the key-encryption key (KEK) every server of a control plane holds,
//! sealing and opening a secret's values, and resolving the references of a step or a
//! worker config for the one worker being handed them. The store keeps sealed bytes and
//! the key's fingerprint only; this module is the one place that sees both a key and a
//! value, and it never logs, returns in an error or stores a value.
//!
//! Cipher: XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`, pure Rust): a random 24-byte
//! nonce per seal is safe without a counter shared by servers. The secret's namespace and
//! name are the associated data, so sealed bytes moved to another row do not open.
//! Sealed format: `1` (version) ‖ nonce (24) ‖ ciphertext of the encoded values.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use rota_domain::secret::SecretRef;
use rota_store::JobStore;
use rota_store::secrets::SecretRecord;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use zeroize::{Zeroize, Zeroizing};

/// Bytes of a key.
const KEY_BYTES: usize = 32;
/// Bytes of a nonce.
const NONCE_BYTES: usize = 24;
/// The sealed format's version byte.
const SEALED_V1: u8 = 1;

/// Secret values by key, wiped when dropped.
pub type Values = BTreeMap<String, Zeroizing<Vec<u8>>>;

/// A key-encryption key. Its `Debug` shows the fingerprint only.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; KEY_BYTES]>);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.fingerprint())
    }
}

/// Why a key file's text is not a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not base64 of 32 bytes.
    #[error("not a rota secret key (one line: 32 bytes in base64, as `rota server` writes it)")]
    Malformed,
}

/// Why sealed values cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Sealed under another key (or damaged).
    #[error("sealed under another secret key (fingerprint {0}) than this server holds")]
    OtherKey(String),
    /// Not in a format this build reads.
    #[error("the stored secret is damaged or in an unknown format")]
    Damaged,
}

impl SecretKey {
    /// A key for another purpose derived from this one (SHA-256 of the purpose and the key):
    /// the dashboard signs its session cookies with one, so every server holding the same
    /// key file accepts them, and the secrets key itself never signs anything.
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let mut h = Sha256::new();
        h.update(purpose.as_bytes());
        h.update([0u8]);
        h.update(self.0.as_ref());
        Zeroizing::new(h.finalize().into())
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; KEY_BYTES]);
        rand::rng().fill_bytes(k.as_mut());
        Self(k)
    }

    /// The key a key file holds (surrounding white space ignored).
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        let mut bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|_| KeyError::Malformed)?,
        );
        if bytes.len() != KEY_BYTES {
            bytes.zeroize();
            return Err(KeyError::Malformed);
        }
        let mut k = Zeroizing::new([0u8; KEY_BYTES]);
        k.copy_from_slice(&bytes);
        Ok(Self(k))
    }

    /// The text of its key file (base64, newline-terminated).
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.0.as_ref()));
        s.push('\n');
        s
    }

    /// A short public name of the key (32 hex digits of a SHA-256 over a label and the key):
    /// what the store keeps, and what messages may show.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"rota secret key fingerprint v1\0");
        h.update(self.0.as_ref());
        hex::encode(&h.finalize()[..16])
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.as_ref().into())
    }

    /// Seals `values` of secret `namespace/name`.
    pub fn seal(&self, namespace: &str, name: &str, values: &Values) -> Vec<u8> {
        let plain = encode(values);
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated(namespace, name);
        // Encryption of an in-memory buffer fails only past the cipher's length limit
        // (256 GiB), far beyond a secret's: an empty result would not open, never leak.
        let ct = self
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain.as_slice(), aad: &aad })
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_BYTES + ct.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens the values of a stored secret.
    pub fn open(&self, r: &SecretRecord) -> Result<Values, OpenError> {
        self.open_sealed(&r.namespace, &r.name, &r.sealed, &r.key_fingerprint)
    }

    fn open_sealed(
        &self,
        namespace: &str,
        name: &str,
        sealed: &[u8],
        fingerprint: &str,
    ) -> Result<Values, OpenError> {
        if sealed.len() < 1 + NONCE_BYTES || sealed[0] != SEALED_V1 {
            return Err(OpenError::Damaged);
        }
        let (nonce, ct) = sealed[1..].split_at(NONCE_BYTES);
        let aad = associated(namespace, name);
        let plain = Zeroizing::new(
            self.cipher()
                .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
                .map_err(|_| OpenError::OtherKey(fingerprint.to_string()))?,
        );
        decode(&plain).ok_or(OpenError::Damaged)
    }
}

/// The associated-data namespace of sealed tokens: not a valid namespace name, so no secret
/// can be opened as a token or a token as a secret.
const HANDOVER_NAMESPACE: &str = "\0credential";

fn associated(namespace: &str, name: &str) -> Vec<u8> {
    [b"rota secret v1\0".as_slice(), namespace.as_bytes(), b"\0", name.as_bytes()].concat()
}

/// Values as bytes: per entry, the key's length (u32 BE), the key, the value's length, the
/// value.
fn encode(values: &Values) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    for (k, v) in values {
        for part in [k.as_bytes(), v.as_slice()] {
            out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

fn decode(mut bytes: &[u8]) -> Option<Values> {
    let take = |bytes: &mut &[u8]| -> Option<Vec<u8>> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        let part = rest.get(..len)?.to_vec();
        *bytes = &rest[len..];
        Some(part)
    };
    let mut out = Values::new();
    while !bytes.is_empty() {
        let k = String::from_utf8(take(&mut bytes)?).ok()?;
        let v = Zeroizing::new(take(&mut bytes)?);
        out.insert(k, v);
    }
    Some(out)
}

/// The key a server holds, and the file it came from (re-read when the store's secrets
/// were re-sealed under another key: copying the new key file is how the other servers of
/// a fleet follow a rotation, without a restart).
pub struct Keyring {
    key: RwLock<SecretKey>,
    file: Option<PathBuf>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({:?}, {:?})", self.current(), self.file)
    }
}

impl Keyring {
    /// A keyring holding `key`, read from `file` if given.
    pub fn new(key: SecretKey, file: Option<PathBuf>) -> Self {
        Self { key: RwLock::new(key), file }
    }

    /// The key in use.
    pub fn current(&self) -> SecretKey {
        self.key.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The key file, if the key came from one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Uses `key` from now on.
    pub fn replace(&self, key: SecretKey) {
        *self.key.write().unwrap_or_else(PoisonError::into_inner) = key;
    }

    /// The key whose fingerprint is `fingerprint`: the one in use, else the key file's
    /// current content if it is that key (then used from now on).
    pub fn key_for(&self, fingerprint: &str) -> Option<SecretKey> {
        let key = self.current();
        if key.fingerprint() == fingerprint {
            return Some(key);
        }
        let text = Zeroizing::new(std::fs::read_to_string(self.file.as_ref()?).ok()?);
        let fresh = SecretKey::from_text(&text).ok()?;
        if fresh.fingerprint() != fingerprint {
            return None;
        }
        tracing::info!(fingerprint, "secret key file changed: using the new key (a rotation happened)");
        self.replace(fresh.clone());
        Some(fresh)
    }

    /// Seals a rotated control-plane token for hand-over (the store's `credentials.handover`):
    /// `FINGERPRINT:BASE64`, bound to its kind (a sealed join token never opens as another).
    pub fn seal_token(&self, kind: &str, token: &str) -> String {
        let key = self.current();
        let mut values = Values::new();
        values.insert("token".into(), Zeroizing::new(token.as_bytes().to_vec()));
        let sealed = key.seal(HANDOVER_NAMESPACE, kind, &values);
        format!("{}:{}", key.fingerprint(), base64::engine::general_purpose::STANDARD.encode(sealed))
    }

    /// Opens what [`Keyring::seal_token`] sealed; `None` if it is damaged or sealed under a
    /// key this server does not hold.
    pub fn open_token(&self, kind: &str, text: &str) -> Option<Zeroizing<String>> {
        let (fingerprint, b64) = text.split_once(':')?;
        let sealed = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        let key = self.key_for(fingerprint)?;
        let values = key.open_sealed(HANDOVER_NAMESPACE, kind, &sealed, fingerprint).ok()?;
        let token = String::from_utf8(values.get("token")?.to_vec()).ok()?;
        Some(Zeroizing::new(token))
    }

    /// Opens a stored secret with the key it is sealed under.
    pub fn open(&self, r: &SecretRecord) -> Result<Values, OpenError> {
        match self.key_for(&r.key_fingerprint) {
            Some(key) => key.open(r),
            None => Err(OpenError::OtherKey(r.key_fingerprint.clone())),
        }
    }
}

/// A reference that cannot be resolved, and why (never a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// `NAME/KEY`.
    pub reference: String,
    /// What is wrong.
    pub problem: String,
}

/// Resolves references of namespace `namespace` to their values (as text: they become
/// environment variables or files). Each secret is read and opened once per call.
pub async fn resolve<'a>(
    store: &dyn JobStore,
    keyring: Option<&Keyring>,
    namespace: &str,
    refs: impl IntoIterator<Item = &'a SecretRef>,
) -> Result<BTreeMap<SecretRef, Zeroizing<String>>, Unresolved> {
    let mut opened: BTreeMap<String, Values> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for r in refs {
        let fail = |problem: String| Unresolved { reference: r.secret.clone(), problem };
        let Some(keyring) = keyring else {
            return Err(fail("this server holds no secret key (--secret-key-file)".into()));
        };
        if !opened.contains_key(r.name()) {
            let found = store
                .get_secret(namespace, r.name())
                .await
                .map_err(|e| fail(format!("the store cannot be read: {e}")))?
                .ok_or_else(|| fail(format!("no secret named '{}'", r.name())))?;
            let values = keyring.open(&found).map_err(|e| fail(e.to_string()))?;
            opened.insert(r.name().to_string(), values);
        }
        let value = opened
            .get(r.name())
            .and_then(|v| v.get(r.key()))
            .ok_or_else(|| fail(format!("secret '{}' has no key '{}'", r.name(), r.key())))?;
        let text = std::str::from_utf8(value)
            .map_err(|_| fail("the value is not UTF-8 text, so it cannot be given as text".into()))?;
        out.insert(r.clone(), Zeroizing::new(text.to_string()));
    }
    Ok(out)
}

/// Checks that every reference names a stored secret and one of its keys (by its key
/// names: nothing is opened); the first that does not is returned with its field.
pub async fn check_refs(
    store: &dyn JobStore,
    namespace: &str,
    refs: impl IntoIterator<Item = (String, SecretRef)>,
) -> Result<Result<(), (String, String)>, rota_store::StoreError> {
    let mut known: BTreeMap<String, Option<SecretRecord>> = BTreeMap::new();
    for (field, r) in refs {
        if !known.contains_key(r.name()) {
            known.insert(r.name().to_string(), store.get_secret(namespace, r.name()).await?);
        }
        match known.get(r.name()).and_then(Option::as_ref) {
            None => {
                return Ok(Err((
                    field,
                    format!("no secret named '{}'; create it first (`rota secret create`)", r.name()),
                )));
            }
            Some(s) if !s.keys.contains_key(r.key()) => {
                let keys: Vec<&str> = s.keys.keys().map(String::as_str).collect();
                return Ok(Err((
                    field,
                    format!("secret '{}' has no key '{}' (its keys: {})", r.name(), r.key(), keys.join(", ")),
                )));
            }
            Some(_) => {}
        }
    }
    Ok(Ok(()))
}

/// Rewrites a key file with `key`: the previous content is kept beside it as
/// `<file>.previous` (0600), the new one written to a temp file, fsynced and renamed into
/// place, so a reader sees the old key or the new one, never half of one.
pub fn replace_key_file(path: &Path, key: &SecretKey) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let with_suffix = |suffix: &str| {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        path.with_file_name(name)
    };
    let write = |to: &Path, text: &[u8]| -> std::io::Result<()> {
        let _ = std::fs::remove_file(to);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(to)?;
        f.write_all(text)?;
        f.sync_all()
    };
    if let Ok(previous) = std::fs::read(path).map(Zeroizing::new) {
        write(&with_suffix(".previous"), &previous)?;
    }
    let tmp = with_suffix(&format!(".{}.tmp", std::process::id()));
    write(&tmp, key.to_text().as_bytes())?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(ns: &str, name: &str, sealed: Vec<u8>, fp: String) -> SecretRecord {
        SecretRecord {
            namespace: ns.into(),
            name: name.into(),
            labels: BTreeMap::new(),
            generation: 1,
            keys: BTreeMap::new(),
            sealed,
            key_fingerprint: fp,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_sealed_token_opens_only_as_its_kind_and_under_its_key() {
        let ring = Keyring::new(SecretKey::generate(), None);
        let sealed = ring.seal_token("join", "tok-123456");
        assert!(!sealed.contains("tok-123456"));
        assert_eq!(ring.open_token("join", &sealed).as_deref().map(String::as_str), Some("tok-123456"));
        assert!(ring.open_token("admin", &sealed).is_none(), "bound to its kind");
        assert!(Keyring::new(SecretKey::generate(), None).open_token("join", &sealed).is_none());
        assert!(ring.open_token("join", "garbage").is_none());
    }

    #[test]
    fn values_round_trip_and_only_open_where_sealed_with_the_same_key() {
        let key = SecretKey::generate();
        let values: Values = [
            ("token".to_string(), Zeroizing::new(b"s3cret-value".to_vec())),
            ("bin".to_string(), Zeroizing::new(vec![0, 255, 10])),
        ]
        .into();
        let sealed = key.seal("default", "deploy", &values);
        assert!(!sealed.windows(12).any(|w| w == b"s3cret-value"), "the value is not in the sealed bytes");
        let got = key.open(&record("default", "deploy", sealed.clone(), key.fingerprint())).unwrap();
        assert_eq!(got.get("token").map(|v| v.as_slice()), Some(b"s3cret-value".as_slice()));
        assert_eq!(got.len(), 2);
        assert!(
            key.open(&record("default", "other", sealed.clone(), key.fingerprint())).is_err(),
            "bound to its name"
        );
        assert!(SecretKey::generate().open(&record("default", "deploy", sealed, key.fingerprint())).is_err());
    }

    #[test]
    fn keys_round_trip_through_their_text_and_show_only_a_fingerprint() {
        let key = SecretKey::generate();
        let again = SecretKey::from_text(&key.to_text()).unwrap();
        assert_eq!(again.fingerprint(), key.fingerprint());
        assert_eq!(key.fingerprint().len(), 32);
        assert!(SecretKey::from_text("nope").is_err());
        assert!(!format!("{key:?}").contains(key.to_text().trim()));
    }
}

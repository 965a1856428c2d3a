//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks them: the salted
//! credentials a user is stored as, the server side of the exchange, and PLAIN checked against
//! the same credentials (the password never reaches storage).

use std::num::NonZeroU32;

use base64::Engine as _;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// Fewest PBKDF2 iterations a credential may use (Kafka's lower bound).
pub const MIN_ITERATIONS: u32 = 4096;
/// Most PBKDF2 iterations a credential may use (Kafka's upper bound), which also bounds the
/// work one PLAIN login costs.
pub const MAX_ITERATIONS: u32 = 16384;
/// Bytes of salt a new credential gets.
const SALT_BYTES: usize = 32;
/// Bytes of the server's half of the nonce.
const NONCE_BYTES: usize = 24;
/// Longest salt accepted from AlterUserScramCredentials.
const MAX_SALT_BYTES: usize = 1024;

/// A SCRAM hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Mechanism {
    /// SCRAM-SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    /// SCRAM-SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl Mechanism {
    /// Every mechanism, in Kafka's numbering order.
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism a SASL name means, if it is SCRAM.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's number for it (DescribeUserScramCredentials / AlterUserScramCredentials).
    pub fn kafka_type(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    /// The mechanism Kafka's number means.
    pub fn from_kafka_type(value: i8) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.kafka_type() == value)
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    fn output_len(self) -> usize {
        self.digest().output_len()
    }
}

/// Why a credential could not be made.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum CredentialError {
    /// Outside [`MIN_ITERATIONS`, `MAX_ITERATIONS`].
    #[error("iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, not {0}")]
    Iterations(i64),
    /// An empty or oversized salt.
    #[error("the salt must hold 1 to {MAX_SALT_BYTES} bytes, not {0}")]
    Salt(usize),
    /// A salted password of the wrong length for the mechanism.
    #[error("a {0} salted password is {1} bytes, not {2}")]
    SaltedPassword(&'static str, usize, usize),
    /// The system random source failed.
    #[error("no randomness available")]
    Random,
}

/// What is stored of one user's password for one mechanism: enough to check a proof, never
/// enough to make one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    /// PBKDF2 salt, base64.
    pub salt: String,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// H(ClientKey), base64.
    pub stored_key: String,
    /// HMAC(SaltedPassword, "Server Key"), base64.
    pub server_key: String,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

fn check_iterations(iterations: i64) -> Result<NonZeroU32, CredentialError> {
    u32::try_from(iterations)
        .ok()
        .filter(|i| (MIN_ITERATIONS..=MAX_ITERATIONS).contains(i))
        .and_then(NonZeroU32::new)
        .ok_or(CredentialError::Iterations(iterations))
}

/// Fresh random bytes.
pub fn random_bytes(len: usize) -> Result<Vec<u8>, CredentialError> {
    let mut bytes = vec![0; len];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| CredentialError::Random)?;
    Ok(bytes)
}

impl ScramCredential {
    /// The credential for `password`, with a fresh salt.
    pub fn from_password(mechanism: Mechanism, password: &str, iterations: i64) -> Result<ScramCredential, CredentialError> {
        let rounds = check_iterations(iterations)?;
        let salt = random_bytes(SALT_BYTES)?;
        let salted = salt_password(mechanism, password, &salt, rounds);
        ScramCredential::from_salted_password(mechanism, &salt, &salted, iterations)
    }

    /// The credential for a password salted by the client (AlterUserScramCredentials).
    pub fn from_salted_password(mechanism: Mechanism, salt: &[u8], salted_password: &[u8], iterations: i64) -> Result<ScramCredential, CredentialError> {
        let rounds = check_iterations(iterations)?;
        if salt.is_empty() || salt.len() > MAX_SALT_BYTES {
            return Err(CredentialError::Salt(salt.len()));
        }
        if salted_password.len() != mechanism.output_len() {
            return Err(CredentialError::SaltedPassword(mechanism.name(), mechanism.output_len(), salted_password.len()));
        }
        let key = hmac::Key::new(mechanism.hmac(), salted_password);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored_key = digest::digest(mechanism.digest(), client_key.as_ref());
        let server_key = hmac::sign(&key, b"Server Key");
        Ok(ScramCredential { salt: b64(salt), iterations: rounds.get(), stored_key: b64(stored_key.as_ref()), server_key: b64(server_key.as_ref()) })
    }

    /// Whether `password` is the one this credential was made from (PLAIN): PBKDF2 with the
    /// stored salt, then the stored key compared in constant time.
    pub fn matches_password(&self, mechanism: Mechanism, password: &str) -> bool {
        let (Some(salt), Ok(rounds)) = (unb64(&self.salt), check_iterations(self.iterations.into())) else { return false };
        let salted = salt_password(mechanism, password, &salt, rounds);
        ScramCredential::from_salted_password(mechanism, &salt, &salted, self.iterations.into())
            .is_ok_and(|made| bool::from(made.stored_key.as_bytes().ct_eq(self.stored_key.as_bytes())))
    }
}

fn salt_password(mechanism: Mechanism, password: &str, salt: &[u8], rounds: NonZeroU32) -> Vec<u8> {
    let mut salted = vec![0; mechanism.output_len()];
    pbkdf2::derive(mechanism.pbkdf2(), rounds, salt, password.as_bytes(), &mut salted);
    salted
}

/// Why a SCRAM exchange failed. Every variant is reported to the client the same way
/// (authentication failed) so it learns nothing about which users exist.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ScramError {
    /// The client's message does not follow RFC 5802.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// Channel binding or an authorization identity other than the user.
    #[error("unsupported SCRAM option: {0}")]
    Unsupported(&'static str),
    /// The proof does not match the stored key.
    #[error("invalid credentials")]
    BadProof,
}

/// The server's state between the client's first and final messages.
pub struct ScramServer {
    mechanism: Mechanism,
    user: String,
    credential: ScramCredential,
    /// client-first-message-bare + "," + server-first-message.
    auth_prefix: String,
    nonce: String,
    gs2_header: String,
}

/// A credential no password matches, with the salt an unknown `user` always gets from this
/// process (a salt that changed between attempts would give the user's absence away).
pub fn decoy(mechanism: Mechanism, user: &str) -> Result<ScramCredential, CredentialError> {
    static SECRET: std::sync::OnceLock<Option<hmac::Key>> = std::sync::OnceLock::new();
    let secret = SECRET.get_or_init(|| random_bytes(32).ok().map(|k| hmac::Key::new(hmac::HMAC_SHA256, &k))).as_ref().ok_or(CredentialError::Random)?;
    let salt = hmac::sign(secret, format!("{}\0{user}", mechanism.name()).as_bytes());
    let unknowable = random_bytes(mechanism.output_len())?;
    Ok(ScramCredential {
        salt: b64(&salt.as_ref()[..SALT_BYTES]),
        iterations: MIN_ITERATIONS,
        stored_key: b64(&unknowable),
        server_key: b64(&unknowable),
    })
}

/// The user a client-first message names, before any credential is looked up.
pub fn client_first_user(message: &[u8]) -> Result<String, ScramError> {
    parse_client_first(message).map(|first| first.user)
}

struct ClientFirst {
    gs2_header: String,
    bare: String,
    user: String,
    nonce: String,
}

fn parse_client_first(message: &[u8]) -> Result<ClientFirst, ScramError> {
    let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let mut parts = text.splitn(3, ',');
    let (Some(binding), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ScramError::Malformed("no GS2 header"));
    };
    match binding {
        "n" | "y" => {}
        b if b.starts_with("p=") => return Err(ScramError::Unsupported("channel binding")),
        _ => return Err(ScramError::Malformed("bad channel-binding flag")),
    }
    let mut user = None;
    let mut nonce = None;
    for attribute in bare.split(',') {
        match attribute.split_once('=') {
            Some(("n", v)) => user = Some(decode_saslname(v)?),
            Some(("r", v)) => nonce = Some(v.to_string()),
            Some(("m", _)) => return Err(ScramError::Unsupported("mandatory extension")),
            // Kafka's extensions (e.g. tokenauth) and others are ignored.
            _ => {}
        }
    }
    let user = user.filter(|u| !u.is_empty()).ok_or(ScramError::Malformed("no user name"))?;
    let nonce = nonce.filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')).ok_or(ScramError::Malformed("no or bad nonce"))?;
    if let Some(id) = authzid.strip_prefix("a=")
        && decode_saslname(id)? != user
    {
        return Err(ScramError::Unsupported("an authorization identity other than the user"));
    }
    Ok(ClientFirst { gs2_header: format!("{binding},{authzid},"), bare: bare.to_string(), user, nonce })
}

/// `=2C` is a comma and `=3D` an equals sign in a SCRAM name; any other `=` is an error.
fn decode_saslname(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in a name")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

impl ScramServer {
    /// Takes the client's first message; `credential` is the stored one of the user it names,
    /// if any. Returns the state and the server-first message.
    pub fn start(mechanism: Mechanism, message: &[u8], credential: Option<ScramCredential>) -> Result<(ScramServer, Vec<u8>), ScramError> {
        let first = parse_client_first(message)?;
        // An unknown user goes through the exchange with a made-up credential and fails at the
        // proof, like a wrong password: the answers do not tell which users exist.
        let credential = match credential {
            Some(c) => c,
            None => decoy(mechanism, &first.user).map_err(|_| ScramError::Malformed("no randomness"))?,
        };
        let server_nonce = b64(&random_bytes(NONCE_BYTES).map_err(|_| ScramError::Malformed("no randomness"))?);
        let nonce = format!("{}{server_nonce}", first.nonce);
        let server_first = format!("r={nonce},s={},i={}", credential.salt, credential.iterations);
        let auth_prefix = format!("{},{server_first}", first.bare);
        let state = ScramServer { mechanism, user: first.user, credential, auth_prefix, nonce, gs2_header: first.gs2_header };
        Ok((state, server_first.into_bytes()))
    }

    /// The user being authenticated.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Checks the client's final message; on success returns the server-final message.
    pub fn finish(self, message: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError::Malformed("no proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for attribute in without_proof.split(',') {
            match attribute.split_once('=') {
                Some(("c", v)) => binding = Some(v),
                Some(("r", v)) => nonce = Some(v),
                _ => {}
            }
        }
        if binding.and_then(unb64).as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::Malformed("channel binding does not match the first message"));
        }
        // librdkafka sends its own nonce again before the combined one; Kafka accepts any nonce
        // that ends with the one it sent, and so do we (the proof covers what was sent).
        if !nonce.is_some_and(|n| n.ends_with(self.nonce.as_str())) {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof = unb64(proof).ok_or(ScramError::Malformed("proof is not base64"))?;
        let stored_key = unb64(&self.credential.stored_key).ok_or(ScramError::BadProof)?;
        let server_key = unb64(&self.credential.server_key).ok_or(ScramError::BadProof)?;
        if proof.len() != stored_key.len() {
            return Err(ScramError::BadProof);
        }
        let auth_message = format!("{},{without_proof}", self.auth_prefix);
        let client_signature = hmac::sign(&hmac::Key::new(self.mechanism.hmac(), &stored_key), auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(client_signature.as_ref()).map(|(p, s)| p ^ s).collect();
        let derived = digest::digest(self.mechanism.digest(), &client_key);
        if !bool::from(derived.as_ref().ct_eq(&stored_key)) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac::sign(&hmac::Key::new(self.mechanism.hmac(), &server_key), auth_message.as_bytes());
        Ok(format!("v={}", b64(server_signature.as_ref())).into_bytes())
    }
}

/// A PLAIN message (RFC 4616): `[authzid] NUL user NUL password`. Returns user and password;
/// an authorization identity other than the user is refused.
pub fn parse_plain(message: &[u8]) -> Result<(String, String), ScramError> {
    let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(ScramError::Malformed("PLAIN takes authzid, user and password"));
    };
    if user.is_empty() {
        return Err(ScramError::Malformed("no user name"));
    }
    if !authzid.is_empty() && authzid != user {
        return Err(ScramError::Unsupported("an authorization identity other than the user"));
    }
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client side of the exchange, written from RFC 5802 for the test.
    fn client_final(mechanism: Mechanism, password: &str, client_first_bare: &str, server_first: &str) -> (String, Vec<u8>) {
        let attrs: std::collections::HashMap<&str, &str> = server_first.split(',').filter_map(|a| a.split_once('=')).collect();
        let salt = unb64(attrs["s"]).unwrap();
        let rounds = NonZeroU32::new(attrs["i"].parse().unwrap()).unwrap();
        let salted = salt_password(mechanism, password, &salt, rounds);
        let key = hmac::Key::new(mechanism.hmac(), &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored = digest::digest(mechanism.digest(), client_key.as_ref());
        let without_proof = format!("c=biws,r={}", attrs["r"]);
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac::sign(&hmac::Key::new(mechanism.hmac(), stored.as_ref()), auth.as_bytes());
        let proof: Vec<u8> = client_key.as_ref().iter().zip(signature.as_ref()).map(|(a, b)| a ^ b).collect();
        let server_key = hmac::sign(&key, b"Server Key");
        let expected = format!("v={}", b64(hmac::sign(&hmac::Key::new(mechanism.hmac(), server_key.as_ref()), auth.as_bytes()).as_ref()));
        (format!("{without_proof},p={}", b64(&proof)), expected.into_bytes())
    }

    #[test]
    fn an_exchange_succeeds_with_the_password_and_fails_without_it() {
        for mechanism in Mechanism::ALL {
            let credential = ScramCredential::from_password(mechanism, "pencil", 4096).unwrap();
            let bare = "n=us=2Cer,r=fyko+d2lbbFgONRv9qkxdawL";
            for (password, accepted) in [("pencil", true), ("pencil ", false)] {
                let (server, first) = ScramServer::start(mechanism, format!("n,,{bare}").as_bytes(), Some(credential.clone())).unwrap();
                assert_eq!(server.user(), "us,er");
                let first = String::from_utf8(first).unwrap();
                assert!(first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"), "{first}");
                let (last, expected) = client_final(mechanism, password, bare, &first);
                let outcome = server.finish(last.as_bytes());
                if accepted {
                    assert_eq!(outcome.unwrap(), expected, "{mechanism:?}: the server proves it knows the key");
                } else {
                    assert_eq!(outcome.unwrap_err(), ScramError::BadProof);
                }
            }
        }
    }

    #[test]
    fn the_rfc_7677_vector_verifies() {
        // RFC 7677 section 3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==,
        // 4096 iterations; the server's nonce is fixed here by replaying its state.
        let salt = unb64("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = salt_password(Mechanism::Sha256, "pencil", &salt, NonZeroU32::new(4096).unwrap());
        let credential = ScramCredential::from_salted_password(Mechanism::Sha256, &salt, &salted, 4096).unwrap();
        let bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let server = ScramServer {
            mechanism: Mechanism::Sha256,
            user: "user".into(),
            credential,
            auth_prefix: format!("{bare},{server_first}"),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            gs2_header: "n,,".into(),
        };
        let last = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(server.finish(last.as_bytes()).unwrap(), b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn plain_checks_the_password_against_the_stored_credential() {
        let credential = ScramCredential::from_password(Mechanism::Sha512, "s3cret", 4096).unwrap();
        assert!(credential.matches_password(Mechanism::Sha512, "s3cret"));
        assert!(!credential.matches_password(Mechanism::Sha512, "s3cre"));
        assert!(!credential.matches_password(Mechanism::Sha256, "s3cret"), "the stored key is per mechanism");
        assert_eq!(parse_plain(b"\0alice\0pw").unwrap(), ("alice".to_string(), "pw".to_string()));
        assert_eq!(parse_plain(b"alice\0alice\0pw\0").unwrap_err(), ScramError::Malformed("PLAIN takes authzid, user and password"));
        assert!(matches!(parse_plain(b"admin\0alice\0pw"), Err(ScramError::Unsupported(_))));
    }

    #[test]
    fn malformed_messages_and_bad_parameters_are_refused() {
        let credential = ScramCredential::from_password(Mechanism::Sha256, "pw", 4096).unwrap();
        for bad in [&b"n=user,r=abc"[..], b"p=tls-unique,,n=user,r=abc", b"n,,r=abc", b"n,,n=user", b"n,,n=us=4er,r=abc", b"n,a=other,n=user,r=abc", b"\xff"] {
            assert!(ScramServer::start(Mechanism::Sha256, bad, Some(credential.clone())).is_err(), "{bad:?}");
        }
        // An unknown user gets a server-first message like any other, with the same salt each
        // time, and fails only at the proof.
        let (ghost, first) = ScramServer::start(Mechanism::Sha256, b"n,,n=ghost,r=abc", None).unwrap();
        let (_, again) = ScramServer::start(Mechanism::Sha256, b"n,,n=ghost,r=abc", None).unwrap();
        let salt = |m: &[u8]| String::from_utf8_lossy(m).split(',').find(|a| a.starts_with("s=")).map(str::to_string);
        assert_eq!(salt(&first), salt(&again));
        let (last, _) = client_final(Mechanism::Sha256, "guess", "n=ghost,r=abc", &String::from_utf8(first).unwrap());
        assert_eq!(ghost.finish(last.as_bytes()).unwrap_err(), ScramError::BadProof);
        let (server, _) = ScramServer::start(Mechanism::Sha256, b"n,,n=user,r=abc", Some(credential)).unwrap();
        assert!(matches!(server.finish(b"c=biws,r=abc,p=AAAA"), Err(ScramError::Malformed("nonce does not match"))));
        assert_eq!(ScramCredential::from_password(Mechanism::Sha256, "pw", 4095).unwrap_err(), CredentialError::Iterations(4095));
        assert_eq!(ScramCredential::from_salted_password(Mechanism::Sha512, b"salt", &[0; 32], 4096).unwrap_err(), CredentialError::SaltedPassword("SCRAM-SHA-512", 64, 32));
    }
}

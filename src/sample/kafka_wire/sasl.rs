//! SASL messages of the direct client: PLAIN (RFC 4616) and SCRAM-SHA-256/512
//! (RFC 5802, RFC 7677) on ring's HMAC, digest and PBKDF2 (already in the tree through
//! rustls).
//!
//! Pure: the nonce comes in as an argument, messages go out as bytes. The exchange over a
//! connection (`SaslHandshake`, `SaslAuthenticate`) is in `super::conn`. The server's
//! final signature is verified, so a broker that does not know the password cannot pass
//! as one that does.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2};

use crate::config::kafka_wire::Mechanism;

/// Iteration counts outside this range are refused (Kafka's own bounds are 4096..16384;
/// the upper bound keeps a hostile server from making us spin).
const ITERATIONS: std::ops::RangeInclusive<u32> = 4096..=1_000_000;

/// The PLAIN message: `\0user\0password`.
pub fn plain(username: &str, password: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(username.len() + password.len() + 2);
    out.push(0);
    out.extend_from_slice(username.as_bytes());
    out.push(0);
    out.extend_from_slice(password.as_bytes());
    out
}

/// A fresh client nonce (24 random bytes, base64).
pub fn nonce() -> Result<String, String> {
    let mut b = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).map_err(|_| "no randomness for the SCRAM nonce".to_string())?;
    Ok(B64.encode(b))
}

/// One SCRAM exchange, client side.
pub struct Scram {
    hash: Hash,
    password: String,
    client_nonce: String,
    first_bare: String,
}

#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    fn hmac(self) -> hmac::Algorithm {
        match self {
            Hash::Sha256 => hmac::HMAC_SHA256,
            Hash::Sha512 => hmac::HMAC_SHA512,
        }
    }
    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Hash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Hash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }
    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha512 => &digest::SHA512,
        }
    }
    fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha512 => 64,
        }
    }
}

/// What the client expects in the server's final message.
pub struct ServerSignature(Vec<u8>);

impl Scram {
    /// `None` for a mechanism that is not SCRAM.
    pub fn new(mechanism: Mechanism, username: &str, password: &str, client_nonce: String) -> Option<Self> {
        let hash = match mechanism {
            Mechanism::ScramSha256 => Hash::Sha256,
            Mechanism::ScramSha512 => Hash::Sha512,
            Mechanism::Plain => return None,
        };
        let name = username.replace('=', "=3D").replace(',', "=2C");
        let first_bare = format!("n={name},r={client_nonce}");
        Some(Scram { hash, password: password.to_string(), client_nonce, first_bare })
    }

    /// The client-first message.
    pub fn first(&self) -> Vec<u8> {
        format!("n,,{}", self.first_bare).into_bytes()
    }

    /// The client-final message for the server-first message, and the signature the
    /// server must prove in its final message.
    pub fn respond(&self, server_first: &[u8]) -> Result<(Vec<u8>, ServerSignature), String> {
        let server_first = std::str::from_utf8(server_first).map_err(|_| "server-first message is not UTF-8".to_string())?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in server_first.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(B64.decode(v).map_err(|_| "server salt is not base64".to_string())?),
                Some(("i", v)) => iterations = v.parse::<u32>().ok(),
                Some(("e", v)) => return Err(format!("server error: {v}")),
                _ => {}
            }
        }
        let nonce = nonce.ok_or("server-first message has no nonce")?;
        let salt = salt.filter(|s| !s.is_empty()).ok_or("server-first message has no salt")?;
        let iterations = iterations.filter(|i| ITERATIONS.contains(i)).ok_or("server-first message has no valid iteration count")?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err("server nonce does not extend the client nonce".into());
        }
        let h = self.hash;
        let mut salted = vec![0u8; h.len()];
        let iters = std::num::NonZeroU32::new(iterations).ok_or("zero iterations")?;
        pbkdf2::derive(h.pbkdf2(), iters, &salt, self.password.as_bytes(), &mut salted);
        let salted_key = hmac::Key::new(h.hmac(), &salted);
        let client_key = hmac::sign(&salted_key, b"Client Key");
        let stored_key = digest::digest(h.digest(), client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let client_sig = hmac::sign(&hmac::Key::new(h.hmac(), stored_key.as_ref()), auth_message.as_bytes());
        let proof: Vec<u8> = client_key.as_ref().iter().zip(client_sig.as_ref()).map(|(a, b)| a ^ b).collect();
        let server_key = hmac::sign(&salted_key, b"Server Key");
        let server_sig = hmac::sign(&hmac::Key::new(h.hmac(), server_key.as_ref()), auth_message.as_bytes());
        let final_msg = format!("{without_proof},p={}", B64.encode(proof));
        Ok((final_msg.into_bytes(), ServerSignature(server_sig.as_ref().to_vec())))
    }
}

impl ServerSignature {
    /// Checks the server-final message.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), String> {
        let s = std::str::from_utf8(server_final).map_err(|_| "server-final message is not UTF-8".to_string())?;
        if let Some(e) = s.strip_prefix("e=") {
            return Err(format!("server error: {e}"));
        }
        let v = s.split(',').find_map(|a| a.strip_prefix("v=")).ok_or("server-final message has no signature")?;
        let got = B64.decode(v).map_err(|_| "server signature is not base64".to_string())?;
        // Compared without an early exit (the signature is not secret, but cheap to do right).
        let same = got.len() == self.0.len() && got.iter().zip(&self.0).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if !same {
            return Err("server signature does not match: the broker did not prove it knows the password".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_sha_256_matches_the_rfc_7677_example() {
        let s = Scram::new(Mechanism::ScramSha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO".into()).unwrap();
        assert_eq!(s.first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let (fin, sig) = s.respond(server_first).unwrap();
        assert_eq!(
            String::from_utf8(fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert!(sig.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").is_ok());
        assert!(sig.verify(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").is_err(), "a wrong server signature is refused");
        assert!(sig.verify(b"e=invalid-proof").unwrap_err().contains("invalid-proof"));
    }

    #[test]
    fn hostile_or_broken_server_first_messages_are_refused() {
        let s = Scram::new(Mechanism::ScramSha512, "a,b=c", "pw", "abc".into()).unwrap();
        assert_eq!(s.first(), b"n,,n=a=2Cb=3Dc,r=abc", "names are escaped");
        assert!(s.respond(b"r=xyz123,s=c2FsdA==,i=4096").is_err(), "nonce must extend ours");
        assert!(s.respond(b"r=abc,s=c2FsdA==,i=4096").is_err(), "nonce must add a server part");
        assert!(s.respond(b"r=abcdef,s=c2FsdA==,i=999999999").is_err(), "iterations are bounded");
        assert!(s.respond(b"r=abcdef,i=4096").is_err(), "salt is required");
        assert!(s.respond(b"r=abcdef,s=c2FsdA==,i=4096").is_ok());
        assert!(Scram::new(Mechanism::Plain, "u", "p", "n".into()).is_none());
        assert_eq!(plain("u", "p"), b"\0u\0p");
        assert_ne!(nonce().unwrap(), nonce().unwrap());
    }
}

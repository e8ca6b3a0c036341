//! The cryptography behind `jsonwebtoken` 10 for okta-postman-sync and its simulators: a
//! `CryptoProvider` built on ring, which the Okta client already uses for its DPoP key and hashes.
//! It is its own crate because jsonwebtoken keeps one provider per process, installed first come
//! first served: the product (signing) and the Okta simulator (verifying) run in one process in
//! tests and in `demo`, and must both install this same provider, while the simulator crate may
//! not depend on the product. jsonwebtoken 10 leaves the choice of backend
//! to the application (<https://docs.rs/jsonwebtoken/10.4.0/jsonwebtoken/crypto/struct.CryptoProvider.html>);
//! its two built-in ones are aws-lc-rs (a C library built with cc/cmake) and RustCrypto, whose
//! `rsa` crate carries RUSTSEC-2023-0071 (the Marvin timing attack,
//! <https://rustsec.org/advisories/RUSTSEC-2023-0071.html>) with no fixed release. ring signs RSA
//! in constant time and is already in the tree, so neither is needed.
//!
//! Only what the product and its simulator use is offered: RS256, ES256 and ES384 (the
//! algorithms Okta accepts for `private_key_jwt` and DPoP,
//! <https://developer.okta.com/docs/api/openapi/okta-oauth/guides/client-auth/>). Any other
//! algorithm is an error, never a panic. It holds no key material of its own: keys stay in the
//! caller's `EncodingKey`, which jsonwebtoken zeroizes on drop.

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair};

/// The provider, installed once per process by [`install`].
static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    jwk_utils: JwkUtils {
        extract_rsa_public_key_components,
        extract_ec_public_key_coordinates,
        compute_digest,
    },
};

/// Makes the ring provider jsonwebtoken's default for this process. jsonwebtoken panics at the
/// first signature when no provider is installed and none is selected by its cargo features;
/// every signing or verifying path calls this first. Idempotent (a provider already installed
/// stays).
pub fn install() {
    let _ = RING_PROVIDER.install_default();
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    match (alg, key.family()) {
        (Algorithm::RS256, AlgorithmFamily::Rsa) => {
            let pair = sig::RsaKeyPair::from_der(key.inner())
                .map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
            Ok(Box::new(RsaSigner(pair)))
        }
        (Algorithm::ES256 | Algorithm::ES384, AlgorithmFamily::Ec) => {
            let (signing, _, _) = ec_params(*alg)?;
            let pair = sig::EcdsaKeyPair::from_pkcs8(signing, key.inner(), &SystemRandom::new())
                .map_err(|_| ErrorKind::InvalidEcdsaKey)?;
            Ok(Box::new(EcSigner { pair, alg: *alg }))
        }
        (Algorithm::RS256 | Algorithm::ES256 | Algorithm::ES384, _) => {
            Err(ErrorKind::InvalidKeyFormat.into())
        }
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    match (alg, key.family()) {
        (Algorithm::RS256, AlgorithmFamily::Rsa)
        | (Algorithm::ES256 | Algorithm::ES384, AlgorithmFamily::Ec) => {
            Ok(Box::new(PublicKeyVerifier {
                key: key.clone(),
                alg: *alg,
            }))
        }
        (Algorithm::RS256 | Algorithm::ES256 | Algorithm::ES384, _) => {
            Err(ErrorKind::InvalidKeyFormat.into())
        }
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

/// ring's signing and verification algorithms and the coordinate length of an ECDSA `alg`.
fn ec_params(
    alg: Algorithm,
) -> Result<
    (
        &'static sig::EcdsaSigningAlgorithm,
        &'static sig::EcdsaVerificationAlgorithm,
        usize,
    ),
    Error,
> {
    match alg {
        Algorithm::ES256 => Ok((
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            &sig::ECDSA_P256_SHA256_FIXED,
            32,
        )),
        Algorithm::ES384 => Ok((
            &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            &sig::ECDSA_P384_SHA384_FIXED,
            48,
        )),
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

/// RS256: RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 section 3.3,
/// https://www.rfc-editor.org/rfc/rfc7518#section-3.3).
struct RsaSigner(sig::RsaKeyPair);

impl Signer<Vec<u8>> for RsaSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let mut out = vec![0; self.0.public().modulus_len()];
        self.0
            .sign(&sig::RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut out)
            .map_err(|_| signature::Error::new())?;
        Ok(out)
    }
}

impl JwtSigner for RsaSigner {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

/// ES256/ES384: ECDSA with the fixed-length `r || s` signature JWS uses (RFC 7518 section 3.4).
struct EcSigner {
    pair: sig::EcdsaKeyPair,
    alg: Algorithm,
}

impl Signer<Vec<u8>> for EcSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        self.pair
            .sign(&SystemRandom::new(), msg)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for EcSigner {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// Verifies RS256 (a JWK's `n`/`e`, or a DER public key) and ES256/ES384 (an uncompressed
/// SEC1 point, which is what `DecodingKey::from_jwk` builds from `x`/`y`).
struct PublicKeyVerifier {
    key: DecodingKey,
    alg: Algorithm,
}

impl Verifier<Vec<u8>> for PublicKeyVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let failed = |_| signature::Error::new();
        match (self.alg, self.key.kind()) {
            (Algorithm::RS256, DecodingKeyKind::RsaModulusExponent { n, e }) => {
                sig::RsaPublicKeyComponents { n, e }
                    .verify(&sig::RSA_PKCS1_2048_8192_SHA256, msg, signature)
                    .map_err(failed)
            }
            (Algorithm::RS256, DecodingKeyKind::SecretOrDer(der)) => {
                sig::UnparsedPublicKey::new(&sig::RSA_PKCS1_2048_8192_SHA256, der)
                    .verify(msg, signature)
                    .map_err(failed)
            }
            (alg, DecodingKeyKind::SecretOrDer(point)) => {
                let (_, verify, _) = ec_params(alg).map_err(|_| signature::Error::new())?;
                sig::UnparsedPublicKey::new(verify, point)
                    .verify(msg, signature)
                    .map_err(failed)
            }
            _ => Err(signature::Error::new()),
        }
    }
}

impl JwtVerifier for PublicKeyVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn extract_rsa_public_key_components(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let pair =
        sig::RsaKeyPair::from_der(der).map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
    let public = pair.public();
    let components = sig::RsaPublicKeyComponents::<Vec<u8>>::from(public);
    Ok((components.n, components.e))
}

fn extract_ec_public_key_coordinates(
    pkcs8: &[u8],
    alg: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>), Error> {
    let (signing, _, len) = ec_params(alg)?;
    let curve = if len == 32 {
        EllipticCurve::P256
    } else {
        EllipticCurve::P384
    };
    let pair = sig::EcdsaKeyPair::from_pkcs8(signing, pkcs8, &SystemRandom::new())
        .map_err(|_| ErrorKind::InvalidEcdsaKey)?;
    let point = pair.public_key().as_ref();
    match point.split_first() {
        Some((4, xy)) if xy.len() == 2 * len => {
            let (x, y) = xy.split_at(len);
            Ok((curve, x.to_vec(), y.to_vec()))
        }
        _ => Err(ErrorKind::InvalidEcdsaKey.into()),
    }
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Vec<u8> {
    let alg = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
    };
    ring::digest::digest(alg, data).as_ref().to_vec()
}

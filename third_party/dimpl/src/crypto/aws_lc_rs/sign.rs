//! Signing and key loading implementations using aws-lc-rs.

use std::str;

use aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1_SIGNING;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA384_ASN1};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, UnparsedPublicKey};
use aws_lc_rs::signature::{ECDSA_P384_SHA256_ASN1, ECDSA_P384_SHA384_ASN1};
use aws_lc_rs::signature::{EcdsaKeyPair, EcdsaSigningAlgorithm, EcdsaVerificationAlgorithm};
use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_2048_8192_SHA384};
use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA512, RsaParameters};
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RSA_PKCS1_SHA384, RSA_PKCS1_SHA512};
use aws_lc_rs::signature::{RsaEncoding, RsaKeyPair};
use der::{Decode, Encode};
use spki::ObjectIdentifier;
use x509_cert::Certificate as X509Certificate;

use super::super::{KeyProvider, SignatureVerifier, SigningKey, check_verify_scheme};
use super::super::{OID_P256, OID_P384};
use crate::buffer::Buf;
use crate::types::{HashAlgorithm, NamedGroup, SignatureAlgorithm};
use crate::{CryptoError, CryptoOperation};

/// ECDSA signing key implementation.
struct EcdsaSigningKey {
    key_pair: EcdsaKeyPair,
    signing_algorithm: &'static EcdsaSigningAlgorithm,
}

impl std::fmt::Debug for EcdsaSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcdsaSigningKey")
            .field("signing_algorithm", &self.signing_algorithm)
            .finish()
    }
}

impl SigningKey for EcdsaSigningKey {
    fn sign(
        &mut self,
        data: &[u8],
        hash_alg: HashAlgorithm,
        buf: &mut Buf,
    ) -> Result<(), CryptoError> {
        let key_hash = self.hash_algorithm();
        if hash_alg != key_hash {
            return Err(CryptoError::SigningKeyHashMismatch {
                key_hash,
                requested: hash_alg,
            });
        }
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let signature = self
            .key_pair
            .sign(&rng, data)
            .map_err(|_| CryptoError::OperationFailed(CryptoOperation::Sign))?;
        buf.clear();
        buf.extend_from_slice(signature.as_ref());
        Ok(())
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }

    fn hash_algorithm(&self) -> HashAlgorithm {
        if self.signing_algorithm == &ECDSA_P256_SHA256_ASN1_SIGNING {
            HashAlgorithm::SHA256
        } else if self.signing_algorithm == &ECDSA_P384_SHA384_ASN1_SIGNING {
            HashAlgorithm::SHA384
        } else {
            panic!("Unsupported signing algorithm")
        }
    }

    fn supported_hash_algorithms(&self) -> &[HashAlgorithm] {
        // aws-lc-rs locks the hash at key-load time; only one is supported.
        if self.signing_algorithm == &ECDSA_P256_SHA256_ASN1_SIGNING {
            &[HashAlgorithm::SHA256]
        } else if self.signing_algorithm == &ECDSA_P384_SHA384_ASN1_SIGNING {
            &[HashAlgorithm::SHA384]
        } else {
            panic!("Unsupported signing algorithm")
        }
    }
}

/// RSA signing key (PKCS#1 v1.5 padding, the only RSA signature DTLS 1.2 defines).
struct RsaSigningKey {
    key_pair: RsaKeyPair,
}

impl std::fmt::Debug for RsaSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaSigningKey")
            .field("modulus_len", &self.key_pair.public_modulus_len())
            .finish()
    }
}

impl SigningKey for RsaSigningKey {
    fn sign(
        &mut self,
        data: &[u8],
        hash_alg: HashAlgorithm,
        buf: &mut Buf,
    ) -> Result<(), CryptoError> {
        let padding: &'static dyn RsaEncoding = match hash_alg {
            HashAlgorithm::SHA256 => &RSA_PKCS1_SHA256,
            HashAlgorithm::SHA384 => &RSA_PKCS1_SHA384,
            HashAlgorithm::SHA512 => &RSA_PKCS1_SHA512,
            _ => {
                return Err(CryptoError::SigningKeyHashMismatch {
                    key_hash: self.hash_algorithm(),
                    requested: hash_alg,
                });
            }
        };
        let rng = aws_lc_rs::rand::SystemRandom::new();
        buf.clear();
        buf.resize(self.key_pair.public_modulus_len(), 0);
        self.key_pair
            .sign(padding, &rng, data, buf)
            .map_err(|_| CryptoError::OperationFailed(CryptoOperation::Sign))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::RSA
    }

    fn hash_algorithm(&self) -> HashAlgorithm {
        HashAlgorithm::SHA256
    }

    fn supported_hash_algorithms(&self) -> &[HashAlgorithm] {
        // The padding (and so the hash) is chosen per signature, not at key-load time.
        &[
            HashAlgorithm::SHA256,
            HashAlgorithm::SHA384,
            HashAlgorithm::SHA512,
        ]
    }
}

/// Key provider implementation.
#[derive(Debug)]
pub(super) struct AwsLcKeyProvider;

impl KeyProvider for AwsLcKeyProvider {
    fn load_private_key(&self, key_der: &[u8]) -> Result<Box<dyn SigningKey>, CryptoError> {
        // Try PKCS#8 DER format first (most common)
        if let Ok(key_pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key_der) {
            return Ok(Box::new(EcdsaSigningKey {
                key_pair,
                signing_algorithm: &ECDSA_P256_SHA256_ASN1_SIGNING,
            }));
        }
        if let Ok(key_pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, key_der) {
            return Ok(Box::new(EcdsaSigningKey {
                key_pair,
                signing_algorithm: &ECDSA_P384_SHA384_ASN1_SIGNING,
            }));
        }

        // RSA in PKCS#8 DER (2048 to 8192 bit moduli)
        if let Ok(key_pair) = RsaKeyPair::from_pkcs8(key_der) {
            return Ok(Box::new(RsaSigningKey { key_pair }));
        }

        // Try parsing as SEC1 DER format (OpenSSL EC private key format)
        if let Ok(ec_key) = sec1::EcPrivateKey::try_from(key_der) {
            let private_key_len = ec_key.private_key.len();

            let curve_oid = if let Some(params) = &ec_key.parameters {
                match params {
                    sec1::EcParameters::NamedCurve(oid) => Some(*oid),
                }
            } else if private_key_len == 32 {
                Some(ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7")) // P-256
            } else if private_key_len == 48 {
                Some(ObjectIdentifier::new_unwrap("1.3.132.0.34")) // P-384
            } else {
                None
            };

            if let Some(curve_oid) = curve_oid {
                let ec_alg_oid = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
                let curve_params_der = curve_oid
                    .to_der()
                    .map_err(|_| CryptoError::OperationFailed(CryptoOperation::EncodeKey))?;
                let curve_params_any = der::asn1::AnyRef::try_from(curve_params_der.as_slice())
                    .map_err(|_| CryptoError::OperationFailed(CryptoOperation::EncodeKey))?;

                let algorithm = spki::AlgorithmIdentifierRef {
                    oid: ec_alg_oid,
                    parameters: Some(curve_params_any),
                };

                let private_key = der::asn1::OctetStringRef::new(key_der)
                    .map_err(|_| CryptoError::OperationFailed(CryptoOperation::EncodeKey))?;
                let pkcs8 = pkcs8::PrivateKeyInfoRef {
                    algorithm,
                    private_key,
                    public_key: None,
                };

                let pkcs8_der = pkcs8
                    .to_der()
                    .map_err(|_| CryptoError::OperationFailed(CryptoOperation::EncodeKey))?;

                let p256_curve = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
                if curve_oid == p256_curve
                    && let Ok(key_pair) =
                        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8_der)
                {
                    return Ok(Box::new(EcdsaSigningKey {
                        key_pair,
                        signing_algorithm: &ECDSA_P256_SHA256_ASN1_SIGNING,
                    }));
                }

                let p384_curve = ObjectIdentifier::new_unwrap("1.3.132.0.34");
                if curve_oid == p384_curve
                    && let Ok(key_pair) =
                        EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &pkcs8_der)
                {
                    return Ok(Box::new(EcdsaSigningKey {
                        key_pair,
                        signing_algorithm: &ECDSA_P384_SHA384_ASN1_SIGNING,
                    }));
                }
            }
        }

        // Check if it's a PEM encoded key
        if let Ok(pem_str) = str::from_utf8(key_der)
            && pem_str.contains("-----BEGIN")
            && let Ok((_label, doc)) = pkcs8::Document::from_pem(pem_str)
        {
            return self.load_private_key(doc.as_bytes());
        }

        Err(CryptoError::InvalidPrivateKey)
    }
}

/// Signature verifier implementation.
#[derive(Debug)]
pub(super) struct AwsLcSignatureVerifier;

impl SignatureVerifier for AwsLcSignatureVerifier {
    fn verify_signature(
        &self,
        cert_der: &[u8],
        data: &[u8],
        signature: &[u8],
        hash_alg: HashAlgorithm,
        sig_alg: SignatureAlgorithm,
    ) -> Result<(), CryptoError> {
        let cert =
            X509Certificate::from_der(cert_der).map_err(|_| CryptoError::CertificateParseFailed)?;
        let spki = cert.tbs_certificate().subject_public_key_info();

        const OID_EC_PUBLIC_KEY: ObjectIdentifier =
            ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
        const OID_RSA_ENCRYPTION: ObjectIdentifier =
            ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

        let pubkey_bytes = spki
            .subject_public_key
            .as_bytes()
            .ok_or(CryptoError::InvalidSubjectPublicKey)?;

        match (sig_alg, spki.algorithm.oid) {
            (SignatureAlgorithm::ECDSA, OID_EC_PUBLIC_KEY) => {}
            (SignatureAlgorithm::RSA, OID_RSA_ENCRYPTION) => {
                return verify_rsa_pkcs1(pubkey_bytes, data, signature, hash_alg);
            }
            (SignatureAlgorithm::ECDSA | SignatureAlgorithm::RSA, _) => {
                return Err(CryptoError::UnsupportedPublicKeyAlgorithm);
            }
            _ => return Err(CryptoError::UnsupportedSignatureAlgorithm(sig_alg)),
        }

        let curve_oid: ObjectIdentifier = spki
            .algorithm
            .parameters
            .as_ref()
            .ok_or(CryptoError::MissingEcCurveParameter)?
            .decode_as()
            .map_err(|_| CryptoError::InvalidEcCurveParameter)?;

        let group = match curve_oid {
            OID_P256 => NamedGroup::Secp256r1,
            OID_P384 => NamedGroup::Secp384r1,
            _ => return Err(CryptoError::UnsupportedEcCurve),
        };

        check_verify_scheme(sig_alg, hash_alg, group)?;

        let algorithm: &EcdsaVerificationAlgorithm = match (group, hash_alg) {
            (NamedGroup::Secp256r1, HashAlgorithm::SHA256) => &ECDSA_P256_SHA256_ASN1,
            (NamedGroup::Secp256r1, HashAlgorithm::SHA384) => &ECDSA_P256_SHA384_ASN1,
            (NamedGroup::Secp384r1, HashAlgorithm::SHA256) => &ECDSA_P384_SHA256_ASN1,
            (NamedGroup::Secp384r1, HashAlgorithm::SHA384) => &ECDSA_P384_SHA384_ASN1,
            // unreachable: check_verify_scheme already validated
            _ => unreachable!(),
        };

        let public_key = UnparsedPublicKey::new(algorithm, pubkey_bytes);
        public_key
            .verify(data, signature)
            .map_err(|_| CryptoError::SignatureVerificationFailed {
                signature: sig_alg,
                hash: hash_alg,
                group,
            })
    }
}

/// Verifies an RSASSA-PKCS1-v1_5 signature (RFC 5246 section 4.7) with the certificate's
/// RSAPublicKey (the subjectPublicKey bits of an rsaEncryption key). The modulus must be
/// 2048 to 8192 bits.
fn verify_rsa_pkcs1(
    rsa_public_key: &[u8],
    data: &[u8],
    signature: &[u8],
    hash_alg: HashAlgorithm,
) -> Result<(), CryptoError> {
    // RSA keys have no named group; errors carry the default (unknown) one.
    let group = NamedGroup::default();
    let algorithm: &RsaParameters = match hash_alg {
        HashAlgorithm::SHA256 => &RSA_PKCS1_2048_8192_SHA256,
        HashAlgorithm::SHA384 => &RSA_PKCS1_2048_8192_SHA384,
        HashAlgorithm::SHA512 => &RSA_PKCS1_2048_8192_SHA512,
        _ => {
            return Err(CryptoError::UnsupportedSignatureVerification {
                signature: SignatureAlgorithm::RSA,
                hash: hash_alg,
                group,
            });
        }
    };
    UnparsedPublicKey::new(algorithm, rsa_public_key)
        .verify(data, signature)
        .map_err(|_| CryptoError::SignatureVerificationFailed {
            signature: SignatureAlgorithm::RSA,
            hash: hash_alg,
            group,
        })
}

/// Static instance of the key provider.
pub(super) static KEY_PROVIDER: AwsLcKeyProvider = AwsLcKeyProvider;

/// Static instance of the signature verifier.
pub(super) static SIGNATURE_VERIFIER: AwsLcSignatureVerifier = AwsLcSignatureVerifier;

#[cfg(all(test, feature = "rcgen"))]
mod tests {
    use super::*;
    use crate::certificate::generate_self_signed_certificate;

    #[test]
    fn invalid_signature_returns_structured_verification_error() {
        let cert = generate_self_signed_certificate().expect("generate cert");
        let mut key = KEY_PROVIDER
            .load_private_key(&cert.private_key)
            .expect("load private key");
        let data = b"signed data";
        let mut signature = Buf::new();
        key.sign(data, HashAlgorithm::SHA256, &mut signature)
            .expect("sign data");

        let last = signature.len() - 1;
        signature[last] ^= 0x01;

        let err = SIGNATURE_VERIFIER
            .verify_signature(
                &cert.certificate,
                data,
                &signature,
                HashAlgorithm::SHA256,
                SignatureAlgorithm::ECDSA,
            )
            .expect_err("corrupt signature should fail");

        assert_eq!(
            err,
            CryptoError::SignatureVerificationFailed {
                signature: SignatureAlgorithm::ECDSA,
                hash: HashAlgorithm::SHA256,
                group: NamedGroup::Secp256r1,
            }
        );
    }

    /// A self-signed RSA certificate and its PKCS#8 key, made as `generate_self_signed_certificate`
    /// makes ECDSA ones.
    fn rsa_certificate() -> crate::DtlsCertificate {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
        let params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        let cert = params
            .self_signed(&key_pair)
            .expect("self-signed RSA certificate");
        crate::DtlsCertificate {
            certificate: cert.der().to_vec(),
            private_key: key_pair.serialize_der(),
        }
    }

    #[test]
    fn rsa_pkcs1_signatures_round_trip_for_each_hash() {
        let cert = rsa_certificate();
        let mut key = KEY_PROVIDER
            .load_private_key(&cert.private_key)
            .expect("an RSA PKCS#8 key loads");
        assert_eq!(key.algorithm(), SignatureAlgorithm::RSA);
        assert_eq!(key.hash_algorithm(), HashAlgorithm::SHA256);
        let data = b"signed data";
        for hash in [
            HashAlgorithm::SHA256,
            HashAlgorithm::SHA384,
            HashAlgorithm::SHA512,
        ] {
            assert!(key.supported_hash_algorithms().contains(&hash));
            let mut signature = Buf::new();
            key.sign(data, hash, &mut signature).expect("sign data");
            assert_eq!(signature.len(), 256, "RSA-2048 signature");
            SIGNATURE_VERIFIER
                .verify_signature(
                    &cert.certificate,
                    data,
                    &signature,
                    hash,
                    SignatureAlgorithm::RSA,
                )
                .unwrap_or_else(|e| panic!("{hash:?}: {e}"));

            // The hash is part of what is verified.
            let other = if hash == HashAlgorithm::SHA256 {
                HashAlgorithm::SHA384
            } else {
                HashAlgorithm::SHA256
            };
            assert!(
                SIGNATURE_VERIFIER
                    .verify_signature(
                        &cert.certificate,
                        data,
                        &signature,
                        other,
                        SignatureAlgorithm::RSA
                    )
                    .is_err()
            );
        }
    }

    #[test]
    fn invalid_rsa_signature_returns_structured_verification_error() {
        let cert = rsa_certificate();
        let mut key = KEY_PROVIDER.load_private_key(&cert.private_key).unwrap();
        let mut signature = Buf::new();
        key.sign(b"signed data", HashAlgorithm::SHA256, &mut signature)
            .unwrap();
        signature[7] ^= 0x01;

        let err = SIGNATURE_VERIFIER
            .verify_signature(
                &cert.certificate,
                b"signed data",
                &signature,
                HashAlgorithm::SHA256,
                SignatureAlgorithm::RSA,
            )
            .expect_err("corrupt signature should fail");

        assert_eq!(
            err,
            CryptoError::SignatureVerificationFailed {
                signature: SignatureAlgorithm::RSA,
                hash: HashAlgorithm::SHA256,
                group: NamedGroup::default(),
            }
        );
    }

    #[test]
    fn rsa_verification_rejects_weak_hashes_and_mismatched_keys() {
        let rsa = rsa_certificate();
        let ecdsa = generate_self_signed_certificate().unwrap();
        let mut rsa_key = KEY_PROVIDER.load_private_key(&rsa.private_key).unwrap();
        let mut signature = Buf::new();
        rsa_key
            .sign(b"data", HashAlgorithm::SHA256, &mut signature)
            .unwrap();
        assert!(matches!(
            rsa_key.sign(b"data", HashAlgorithm::SHA1, &mut signature),
            Err(CryptoError::SigningKeyHashMismatch { .. })
        ));

        let verify = |cert: &[u8], hash, sig_alg| {
            SIGNATURE_VERIFIER.verify_signature(cert, b"data", &signature, hash, sig_alg)
        };
        assert!(matches!(
            verify(
                &rsa.certificate,
                HashAlgorithm::SHA1,
                SignatureAlgorithm::RSA
            ),
            Err(CryptoError::UnsupportedSignatureVerification { .. })
        ));
        assert_eq!(
            verify(
                &rsa.certificate,
                HashAlgorithm::SHA256,
                SignatureAlgorithm::ECDSA
            ),
            Err(CryptoError::UnsupportedPublicKeyAlgorithm)
        );
        assert_eq!(
            verify(
                &ecdsa.certificate,
                HashAlgorithm::SHA256,
                SignatureAlgorithm::RSA
            ),
            Err(CryptoError::UnsupportedPublicKeyAlgorithm)
        );
        assert_eq!(
            verify(
                &rsa.certificate,
                HashAlgorithm::SHA256,
                SignatureAlgorithm::DSA
            ),
            Err(CryptoError::UnsupportedSignatureAlgorithm(
                SignatureAlgorithm::DSA
            ))
        );
    }

    #[test]
    fn ed25519_certificates_stay_unsupported() {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let cert = params.self_signed(&key_pair).unwrap();
        assert!(matches!(
            KEY_PROVIDER.load_private_key(&key_pair.serialize_der()),
            Err(CryptoError::InvalidPrivateKey)
        ));
        for sig_alg in [SignatureAlgorithm::RSA, SignatureAlgorithm::ECDSA] {
            assert_eq!(
                SIGNATURE_VERIFIER.verify_signature(
                    cert.der(),
                    b"data",
                    &[0; 64],
                    HashAlgorithm::SHA256,
                    sig_alg
                ),
                Err(CryptoError::UnsupportedPublicKeyAlgorithm)
            );
        }
    }
}

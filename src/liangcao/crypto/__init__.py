"""Cryptographic foundations: Ed25519 keys, X.509 identities and RFC 6962 Merkle trees."""

"""The WebAuthn relying party (house plan §11): devices and payment-bound confirmation.

The challenge a shopper's authenticator signs commits to the payment (order, payee, amount, currency, nonce),
as W3C Secure Payment Confirmation does; the biometric never leaves the device.
"""

from liangcao.authn.codes import AuthnCode, AuthnError
from liangcao.authn.rp import Confirmation, Credential, RelyingParty
from liangcao.authn.soft import AttestationCA, SoftAuthenticator

__all__ = [
    "AttestationCA",
    "AuthnCode",
    "AuthnError",
    "Confirmation",
    "Credential",
    "RelyingParty",
    "SoftAuthenticator",
]

"""The WebAuthn relying party (house plan §11): devices and payment-bound confirmation.

The challenge a shopper's authenticator signs commits to the payment (order, payee, amount, currency, nonce),
as W3C Secure Payment Confirmation does; the biometric never leaves the device.

Built on ``webauthn`` (py_webauthn) rather than ``fido2``: we need the relying-party half only, which is
what py_webauthn is (typed, one function per ceremony, every attestation format with chains checked
against our roots); ``fido2`` is a client/CTAP library first. See ``rp`` and ``docs/authn.md``.

Modules: ``rp`` (the relying party), ``batch`` (the gateway's step-up path: concurrent answers judged and
recorded in micro-batches), ``binding`` (the payment challenge), ``store`` (SQLite WAL, group commit), ``soft`` (a software authenticator with real keys), ``http`` (the router and the page), ``codes``
(``AuthnCode`` 3200-3299, ``AuthnError``, the ``*_max`` limits), ``bench``, ``cli``.
"""

from liangcao.authn.codes import AuthnCode, AuthnError
from liangcao.authn.rp import Confirmation, Credential, PaymentAnswer, RelyingParty
from liangcao.authn.soft import AttestationCA, SoftAuthenticator

__all__ = [
    "AttestationCA",
    "AuthnCode",
    "AuthnError",
    "Confirmation",
    "Credential",
    "PaymentAnswer",
    "RelyingParty",
    "SoftAuthenticator",
]

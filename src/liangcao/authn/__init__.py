"""The WebAuthn relying party (house plan §11): devices and payment-bound confirmation.

The challenge a shopper's authenticator signs commits to the payment (order, payee, amount, currency, nonce),
as W3C Secure Payment Confirmation does; the biometric never leaves the device.
"""

"""The node: mempool -> ordering -> verify signatures -> execute -> commit -> attest -> events."""

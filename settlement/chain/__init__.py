"""The on-chain side of escrow settlement (docs/escrow.md): the compiled contracts and the development chain.

``artifacts`` loads the ABI and bytecode of ``SettlementEscrow`` and the test tokens, compiled from ``contracts/``
by ``scripts/build-contracts`` and committed in ``settlement/chain/artifacts/`` (the server never needs Node).
``devchain`` starts Anvil and deploys the escrow and test tokens on it (``scripts/devchain``, the tests).
"""

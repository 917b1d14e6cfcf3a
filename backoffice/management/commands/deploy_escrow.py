import os

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from eth_account import Account
from web3.exceptions import Web3Exception

from channels_app import identity
from settlement.chain.deploy import ChainError, connect, contract, deploy


class Command(BaseCommand):
    help = ("Deploy the SettlementEscrow contract (docs/escrow.md) for production, on any EVM chain: its operator() "
            "is the operator's identity (OPERATOR_PRIVATE_KEY), the only account that may open escrows. The "
            "deploying account pays the gas: the operator's, or the key in the environment variable named by "
            "--deployer-key-env. Waits for the receipt and prints ESCROW_CONTRACT=0x... (set it in the server's "
            "environment) and the operator address. The bytecode is the committed build (settlement/chain/"
            "artifacts), so Node is not needed.")

    def add_arguments(self, parser):
        parser.add_argument("--rpc-url", default=getattr(settings, "ESCROW_RPC_URL", "") or None,
                            help="the chain's JSON-RPC endpoint, http(s) or ws(s) (default: ESCROW_RPC_URL)")
        parser.add_argument("--deployer-key-env", metavar="NAME",
                            help="the environment variable holding the private key that pays for the deployment "
                                 "(default: the operator key)")
        parser.add_argument("--timeout", type=float, default=300,
                            help="seconds to wait for the deployment to be mined (default 300)")

    def handle(self, *args, rpc_url, deployer_key_env, timeout, **options):
        if not rpc_url:
            raise CommandError("no chain: give --rpc-url (or set ESCROW_RPC_URL)")
        try:
            operator = identity.operator_keys().account
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        deployer = operator
        if deployer_key_env:
            key = os.environ.get(deployer_key_env, "").strip()
            if not key:
                raise CommandError(f"the environment variable {deployer_key_env} (--deployer-key-env) is not set")
            try:
                deployer = Account.from_key(key)
            except (ValueError, TypeError) as exc:
                raise CommandError(f"{deployer_key_env} does not hold a private key: {exc}") from None
        try:
            w3 = connect(rpc_url)
            chain_id = w3.eth.chain_id
            self.stderr.write(f"deploying SettlementEscrow on chain {chain_id} from {deployer.address} "
                              f"(operator {operator.address})")
            address, receipt = deploy(w3, deployer, "SettlementEscrow", operator.address, timeout=timeout)
            deployed_operator = contract(w3, "SettlementEscrow", address).functions.operator().call()
        except (ChainError, Web3Exception, ValueError, OSError) as exc:
            raise CommandError(f"deploy failed: {exc}") from None
        if deployed_operator != operator.address:
            raise CommandError(f"the escrow at {address} reports operator {deployed_operator}, not {operator.address}")
        self.stderr.write(f"deployed in transaction {receipt['transactionHash'].to_0x_hex()} "
                          f"(block {receipt['blockNumber']}, gas {receipt['gasUsed']})")
        self.stdout.write(f"ESCROW_CONTRACT={address}")
        self.stdout.write(f"operator address: {operator.address}")
        self.stdout.write(f"chain id: {chain_id}")

#!/usr/bin/env node
// Compiles SettlementEscrow and the test tokens with solc-js (standard JSON, fixed settings) and writes one artifact
// per contract, <OUTDIR>/<Name>.json: ABI, creation and runtime bytecode, the compiler version and settings, and
// the sha256 of every source input (OpenZeppelin's included). Deterministic: the same sources give the same files.
//   node build.js [OUTDIR]      OUTDIR defaults to ../settlement/chain/artifacts (the committed artifacts)
// Normally run through scripts/build-contracts, which runs `npm ci` first when needed.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const HERE = __dirname;
const OUT_DIR = path.resolve(process.argv[2] || path.join(HERE, '..', 'settlement', 'chain', 'artifacts'));

// contract name -> source unit (path relative to contracts/)
const CONTRACTS = {
  SettlementEscrow: 'SettlementEscrow.sol',
  TestToken: 'test/TestToken.sol',
  ReentrantToken: 'test/ReentrantToken.sol',
  FeeToken: 'test/FeeToken.sol',
};

// Fixed: changing any of these changes the bytecode (and fails tests/test_contract_artifacts.py until rebuilt).
// evmVersion cancun: supported by Ethereum and the common L2s; later forks' opcodes are not needed.
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: 'cancun',
  metadata: { bytecodeHash: 'ipfs' },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

const resolved = {}; // imports found by the callback: source unit name -> content

function findImports(unit) {
  // Only OpenZeppelin, from this directory's node_modules (pinned in package-lock.json); nothing else is fetched.
  if (unit.startsWith('@openzeppelin/') && !unit.split('/').includes('..')) {
    const file = path.join(HERE, 'node_modules', unit);
    if (fs.existsSync(file)) {
      resolved[unit] = fs.readFileSync(file, 'utf8');
      return { contents: resolved[unit] };
    }
    return { error: `${unit} not found in contracts/node_modules (run npm ci in contracts/)` };
  }
  return { error: `import ${unit} is not allowed: only @openzeppelin/... from node_modules` };
}

function sorted(value) {
  // A copy with every object's keys in sorted order (stable files whatever order solc returns).
  if (Array.isArray(value)) return value.map(sorted);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.keys(value).sort().map((key) => [key, sorted(value[key])]));
  }
  return value;
}

function main() {
  const sources = {};
  for (const unit of [...new Set(Object.values(CONTRACTS))].sort()) {
    sources[unit] = { content: fs.readFileSync(path.join(HERE, unit), 'utf8') };
  }
  const input = { language: 'Solidity', sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));

  const problems = output.errors || [];
  for (const problem of problems) process.stderr.write(problem.formattedMessage || `${problem.message}\n`);
  if (problems.some((problem) => problem.severity === 'error')) {
    process.stderr.write('compilation failed\n');
    process.exit(1);
  }

  // sha256 over every source input (ours and the imported ones), sorted by source unit name, and the settings.
  const allSources = { ...Object.fromEntries(Object.entries(sources).map(([k, v]) => [k, v.content])), ...resolved };
  const hash = crypto.createHash('sha256');
  hash.update(JSON.stringify(sorted({ settings: SETTINGS, sources: allSources })));
  const sourcesSha256 = hash.digest('hex');

  fs.mkdirSync(OUT_DIR, { recursive: true });
  for (const [name, unit] of Object.entries(CONTRACTS)) {
    const compiled = output.contracts[unit][name];
    const artifact = {
      contractName: name,
      sourceName: `contracts/${unit}`,
      compiler: {
        name: 'solc-js',
        version: solc.version(),
        settings: { optimizer: SETTINGS.optimizer, evmVersion: SETTINGS.evmVersion, metadata: SETTINGS.metadata },
      },
      sourcesSha256,
      sources: Object.keys(allSources).sort(),
      abi: compiled.abi,
      bytecode: `0x${compiled.evm.bytecode.object}`,
      deployedBytecode: `0x${compiled.evm.deployedBytecode.object}`,
    };
    const file = path.join(OUT_DIR, `${name}.json`);
    fs.writeFileSync(file, `${JSON.stringify(sorted(artifact), null, 2)}\n`);
    process.stderr.write(`wrote ${file}\n`);
  }
}

main();

"""Decodes omnistream's Avro single-object records with fastavro, using only the .avsc files.

An independent check of SPEC 2's promise that any Avro library can read the topics without a
registry: the writer schema is found by fastavro's own CRC-64-AVRO fingerprint of each schema's
Parsing Canonical Form, never by omnistream's code.

Input (stdin): one record per line, `<label> <hex bytes>`.
Output (stdout): one JSON object per line, `{"label", "schema", "value"}`; timestamps as epoch
milliseconds. Exit 1 naming the first record it cannot decode.
"""

import datetime
import io
import json
import pathlib
import sys

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form


def writer_schemas(schema_dir):
    by_fingerprint = {}
    for path in sorted(pathlib.Path(schema_dir).glob("*.avsc")):
        parsed = fastavro.parse_schema(json.loads(path.read_text()))
        # fastavro's hex is the fingerprint's little-endian bytes, as single-object encoding writes them.
        key = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
        by_fingerprint[key] = (path.name, parsed)
    return by_fingerprint


def plain(value):
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {key: plain(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [plain(inner) for inner in value]
    return value


def main():
    schemas = writer_schemas(sys.argv[1])
    for number, line in enumerate(sys.stdin, start=1):
        label, hex_bytes = line.split()
        data = bytes.fromhex(hex_bytes)
        if data[:2] != b"\xc3\x01":
            sys.exit(f"record {number} ({label}): no single-object marker")
        found = schemas.get(data[2:10])
        if found is None:
            sys.exit(f"record {number} ({label}): fingerprint {data[2:10].hex()} is no schema in {sys.argv[1]}")
        name, schema = found
        body = io.BytesIO(data[10:])
        value = fastavro.schemaless_reader(body, schema)
        if body.read():
            sys.exit(f"record {number} ({label}): bytes left after the datum")
        print(json.dumps({"label": label, "schema": name, "value": plain(value)}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the batch benchmark's inputs for N records into a folder.

records-N.jsonl  one JSON object per line: id, source, amount, holder
batch-N.hurl     the same POSTs as one Hurl file, for a base URL given here
claims.flow      the workflow: POST with merge fields in the URL, two headers
                 and a JSON body, saving the response's `status`

Usage: workload.py FOLDER N BASE_URL
"""

import json
import sys

FLOW = '''workflow "Batch benchmark"

let base = "http://127.0.0.1:1"

step "Send claim" {
  http POST "<<vars.base>>/claims/<<entity.id>>?source=<<entity.source>>" json {
    "claimNumber": "<<entity.id>>",
    "amount": <<entity.amount>>,
    "holder": "<<entity.holder>>"
  } headers {
    "X-Tenant": "acme",
    "X-Request-Id": "<<entity.id>>"
  }
  save response.json.status -> entity.status
}
'''


def record(index):
    return {
        "id": f"C-{index}",
        "source": "batch",
        "amount": round(index * 1.25, 2),
        "holder": f"Holder {index}",
    }


def main():
    folder, count, base = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(f"{folder}/claims.flow", "w") as flow:
        flow.write(FLOW)
    with open(f"{folder}/records-{count}.jsonl", "w") as out:
        for index in range(count):
            out.write(json.dumps(record(index), separators=(",", ":")) + "\n")
    with open(f"{folder}/batch-{count}.hurl", "w") as out:
        for index in range(count):
            item = record(index)
            body = {"claimNumber": item["id"], "amount": item["amount"], "holder": item["holder"]}
            out.write(
                f"POST {base}/claims/{item['id']}?source={item['source']}\n"
                f"X-Tenant: acme\n"
                f"X-Request-Id: {item['id']}\n"
                f"{json.dumps(body)}\n"
                f"HTTP 200\n\n"
            )


if __name__ == "__main__":
    main()

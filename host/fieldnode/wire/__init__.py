"""The wire protocol: frames (COSE_Mac0 around SenML-CBOR), CoAP, console lines, addresses."""

"""The loop: model building, training, checkpoints, runs, distributed/FSDP2, optimizer, metrics.

It imports only the contracts (zoo_core/{hookspecs,interfaces,registry,config,errors,state}.py);
every architecture, data source, tokenizer and tracker reaches it through the registry."""

from trx.cli import main

main()

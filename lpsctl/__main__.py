from lpsctl.cli.app import main

main()

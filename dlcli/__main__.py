from dlcli.cli import main

main()

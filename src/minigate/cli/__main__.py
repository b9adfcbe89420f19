from minigate.cli import main

main()

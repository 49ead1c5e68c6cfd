from taskscout.cli import main

main()

from lfgen.cli import main

main()

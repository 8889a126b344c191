from simlabel.cli import main

main()

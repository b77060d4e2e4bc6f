from modelsiem.cli import main

main()
